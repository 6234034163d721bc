package tablestore

import (
	"context"
	"encoding/json"
	"time"
	"unicode/utf16"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.RestoreStore = (*Store)(nil)

// restoreEntity: PartitionKey = namespace "|" target environment, RowKey = restore id. An environment
// holds few restores, so listing reads the partition and pages in memory, as for snapshots.
//
// UndoDue is UndoUntil in the fixed-width form while the undo data is discardable and "" otherwise: ListUndoDue
// filters on it, so the timer that drops undo data reads only the restores holding some. It is a
// string, like every time of the codec, and the filter compares it with string literals: the fixed
// width makes text order time order, on Azure (which compares typed values) as on Azurite.
type restoreEntity struct {
	PartitionKey        string
	RowKey              string
	SourceEnvironmentID string
	SourceSnapshotID    string
	State               string
	Step                string
	StatusMessage       string
	// The JSON array of the warnings, cut into pieces of at most maxPropertyBytes (warningsPieces).
	Warnings          string
	Warnings2         string
	Warnings3         string
	Warnings4         string
	Progress          string // JSON object or ""
	CreatedAt         time.Time
	UpdatedAt         time.Time
	StartedAt         time.Time
	FinishedAt        time.Time
	CreatedBy         string
	ModelVersion      string
	DeploymentPackage string
	Database          string
	DatabaseBytes     int64
	Tables            int64
	Rows              int64
	FilesCount        int64
	FilesBytes        int64
	FilesAdded        int64
	FilesReplaced     int64
	FilesUnchanged    int64
	OperationID       string
	Fence             int64
	UndoUntil         time.Time
	UndoOperationID   string
	UndoFence         int64
	UndoState         string
	UndoMessage       string
	UndoneAt          time.Time
	UndoneBy          string
	DiscardedAt       time.Time
	UndoDue           string
}

func (e *restoreEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

// warningsPieces is how many properties hold the warnings. The domain bounds them to 16 KiB of UTF-8,
// but JSON escapes a control character as \u00XX (and json.Marshal also <, > and &): six characters,
// 12 bytes in UTF-16, so the worst case is about 192 KiB, three properties' worth and a bit. Four
// always hold it, and an entity stays far below 1 MiB.
const warningsPieces = 4

// splitWarnings cuts s into warningsPieces strings of at most maxPropertyBytes in UTF-16, on rune
// boundaries; what does not fit stays in the last one, which the codec then refuses by name.
func splitWarnings(s string) [warningsPieces]string {
	var out [warningsPieces]string
	for i := 0; i < warningsPieces-1 && s != ""; i++ {
		units, cut := 0, len(s)
		for j, r := range s {
			if units += utf16.RuneLen(r); 2*units > maxPropertyBytes {
				cut = j
				break
			}
		}
		out[i], s = s[:cut], s[cut:]
	}
	out[warningsPieces-1] += s
	return out
}

func (e *restoreEntity) toDomain() backup.Restore {
	ns, env := splitPartition(e.PartitionKey)
	out := backup.Restore{ID: e.RowKey, Namespace: ns, EnvironmentID: env, SourceEnvironmentID: e.SourceEnvironmentID,
		SourceSnapshotID: e.SourceSnapshotID, State: backup.RestoreState(e.State), Step: backup.RestoreStep(e.Step),
		StatusMessage: e.StatusMessage, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, StartedAt: e.StartedAt,
		FinishedAt: e.FinishedAt, CreatedBy: e.CreatedBy, ModelVersion: e.ModelVersion, DeploymentPackage: e.DeploymentPackage,
		Database: e.Database, DatabaseBytes: e.DatabaseBytes, Tables: int(e.Tables), Rows: e.Rows,
		FilesCount: int(e.FilesCount), FilesBytes: e.FilesBytes, FilesAdded: int(e.FilesAdded),
		FilesReplaced: int(e.FilesReplaced), FilesUnchanged: int(e.FilesUnchanged), OperationID: e.OperationID,
		Fence: e.Fence, UndoUntil: e.UndoUntil, UndoOperationID: e.UndoOperationID, UndoFence: e.UndoFence,
		UndoState: backup.RestoreState(e.UndoState), UndoMessage: e.UndoMessage, UndoneAt: e.UndoneAt,
		UndoneBy: e.UndoneBy, DiscardedAt: e.DiscardedAt}
	if w := e.Warnings + e.Warnings2 + e.Warnings3 + e.Warnings4; w != "" {
		_ = json.Unmarshal([]byte(w), &out.Warnings) // written by restoreFromDomain
	}
	if e.Progress != "" {
		var p backup.Progress
		if json.Unmarshal([]byte(e.Progress), &p) == nil {
			out.Progress = &p
		}
	}
	return out
}

func restoreFromDomain(r backup.Restore) *restoreEntity {
	e := &restoreEntity{PartitionKey: envPartition(r.Namespace, r.EnvironmentID), RowKey: r.ID,
		SourceEnvironmentID: r.SourceEnvironmentID, SourceSnapshotID: r.SourceSnapshotID, State: string(r.State),
		Step: string(r.Step), StatusMessage: r.StatusMessage, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, CreatedBy: r.CreatedBy, ModelVersion: r.ModelVersion,
		DeploymentPackage: r.DeploymentPackage, Database: r.Database, DatabaseBytes: r.DatabaseBytes,
		Tables: int64(r.Tables), Rows: r.Rows, FilesCount: int64(r.FilesCount), FilesBytes: r.FilesBytes,
		FilesAdded: int64(r.FilesAdded), FilesReplaced: int64(r.FilesReplaced), FilesUnchanged: int64(r.FilesUnchanged),
		OperationID: r.OperationID, Fence: r.Fence, UndoUntil: r.UndoUntil, UndoOperationID: r.UndoOperationID,
		UndoFence: r.UndoFence, UndoState: string(r.UndoState), UndoMessage: r.UndoMessage, UndoneAt: r.UndoneAt,
		UndoneBy: r.UndoneBy, DiscardedAt: r.DiscardedAt}
	if len(r.Warnings) > 0 {
		b, _ := json.Marshal(r.Warnings)
		w := splitWarnings(string(b))
		e.Warnings, e.Warnings2, e.Warnings3, e.Warnings4 = w[0], w[1], w[2], w[3]
	}
	if r.Progress != nil {
		b, _ := json.Marshal(r.Progress)
		e.Progress = string(b)
	}
	if r.UndoDataDiscardable() {
		e.UndoDue = r.UndoUntil.UTC().Format(timeLayout) // the zero time too: not formatTime's ""
	}
	return e
}

func (s *Store) GetRestore(ctx context.Context, namespace, envID, id string) (backup.Restore, error) {
	var e restoreEntity
	_, found, err := get(ctx, s.table(tableRestores), envPartition(namespace, envID), id, &e)
	if err != nil {
		return backup.Restore{}, err
	}
	if !found {
		return backup.Restore{}, backup.Errorf(backup.CodeNotFound, "restore %s not found", id)
	}
	return e.toDomain(), nil
}

func (s *Store) ListRestores(ctx context.Context, namespace, envID string, offset, limit int) ([]backup.Restore, int, error) {
	entities, err := query[restoreEntity](ctx, s.table(tableRestores), "PartitionKey eq "+odataString(envPartition(namespace, envID)), 0, "restores of "+envID)
	if err != nil {
		return nil, 0, err
	}
	all := make([]backup.Restore, len(entities))
	for i := range entities {
		all[i] = entities[i].toDomain()
	}
	page, total := backup.PageRestoresNewestFirst(all, offset, limit)
	return page, total, nil
}

func (s *Store) CreateRestore(ctx context.Context, r backup.Restore) error {
	return insert(ctx, s.table(tableRestores), restoreFromDomain(r))
}

func (s *Store) UpdateRestore(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Restore]) (backup.Restore, bool, error) {
	return updateEnvRecord(ctx, s.table(tableRestores), namespace, envID, id, fn, restoreFromDomain,
		func(n *backup.Restore) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

// ListUndoDue is one filtered query across partitions: Table Storage returns only the restores whose
// UndoDue is set and before before (the scan is the service's, not ours), at most limit.
func (s *Store) ListUndoDue(ctx context.Context, before time.Time, limit int) ([]backup.Restore, error) {
	if limit <= 0 {
		return nil, ctx.Err() // query reads everything when its top is 0
	}
	entities, err := query[restoreEntity](ctx, s.table(tableRestores), undoDueFilter(before), limit, "restores due for discarding")
	if err != nil {
		return nil, err
	}
	out := make([]backup.Restore, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	return out, nil
}

// undoDueFilter: "" (not committed) is left out, as dueFilter does.
func undoDueFilter(before time.Time) string { return dueFilter("UndoDue", before) }
