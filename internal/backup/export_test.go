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
