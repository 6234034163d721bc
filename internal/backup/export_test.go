package backup

import (
	"context"

	"github.com/rs/zerolog"
)

// ClaimOnly makes a claim for worker and nothing more: a worker that dies right after claiming.
func (s *Service) ClaimOnly(ctx context.Context, namespace, envID, opID, worker string) error {
	_, err := s.claim(ctx, namespace, envID, opID, worker, true, zerolog.Nop())
	return err
}

// RegisterKind adds a kind of operation, as NewService does for backups.
func (s *Service) RegisterKind(kind OperationKind, k JobKind) { s.kinds[kind] = k }

// Enqueue sends op's job message, as starting an operation does.
func (s *Service) Enqueue(ctx context.Context, op Operation) error { return s.enqueue(ctx, op, op.ID) }
