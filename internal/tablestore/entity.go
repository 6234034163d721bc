package tablestore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/mxazure/backups/internal/backup"
)

// maxUpdateAttempts bounds optimistic-concurrency retries of one read-modify-write.
const maxUpdateAttempts = 16

// keyed is implemented by every entity type: they carry their keys as JSON fields.
type keyed interface {
	keys() (pk, rk string)
}

// get reads one entity into v. found is false when it does not exist.
func get(ctx context.Context, t *aztables.Client, pk, rk string, v any) (etag azcore.ETag, found bool, err error) {
	resp, err := t.GetEntity(ctx, pk, rk, nil)
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, transient(err, "read %s/%s", pk, rk)
	}
	if err := json.Unmarshal(resp.Value, v); err != nil {
		return "", false, fmt.Errorf("decode entity %s/%s: %w", pk, rk, err)
	}
	return resp.ETag, true, nil
}

// upsert writes v unconditionally (replace).
func upsert(ctx context.Context, t *aztables.Client, v keyed) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode entity: %w", err)
	}
	if _, err := t.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		pk, rk := v.keys()
		return transient(err, "write %s/%s", pk, rk)
	}
	return nil
}

// insert adds v; it fails with errConflict when the entity exists.
func insert(ctx context.Context, t *aztables.Client, v keyed) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode entity: %w", err)
	}
	if _, err := t.AddEntity(ctx, b, nil); err != nil {
		if statusOf(err) == 409 {
			return errConflict
		}
		pk, rk := v.keys()
		return transient(err, "insert %s/%s", pk, rk)
	}
	return nil
}

// replaceIfMatch replaces v if the stored ETag is still etag; errConflict otherwise.
func replaceIfMatch(ctx context.Context, t *aztables.Client, v keyed, etag azcore.ETag) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode entity: %w", err)
	}
	_, err = t.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
	if isPreconditionFailed(err) {
		return errConflict
	}
	if err != nil {
		pk, rk := v.keys()
		return transient(err, "update %s/%s", pk, rk)
	}
	return nil
}

var errConflict = backup.Errorf(backup.CodeConflict, "the record was changed by someone else; try again")

// update runs an ETag-guarded read-modify-write: read into a fresh E, let decide map it to the next
// entity, write it conditionally, and start over when a concurrent writer won.
func update[E any, PE interface {
	*E
	keyed
}](ctx context.Context, t *aztables.Client, pk, rk string, decide func(cur PE, exists bool) (PE, bool, error)) (PE, bool, error) {
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		cur := PE(new(E))
		etag, exists, err := get(ctx, t, pk, rk, cur)
		if err != nil {
			return nil, false, err
		}
		next, write, err := decide(cur, exists)
		if err != nil || !write {
			return cur, false, err
		}
		if exists {
			err = replaceIfMatch(ctx, t, next, etag)
		} else {
			err = insert(ctx, t, next)
		}
		if err == errConflict {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		return next, true, nil
	}
	return nil, false, backup.Errorf(backup.CodeConflict, "too many concurrent updates of %s/%s", pk, rk)
}

// query reads every entity matching filter (at most top when top > 0), following continuation pages.
func query[E any](ctx context.Context, t *aztables.Client, filter string, top int, what string) ([]E, error) {
	opts := &aztables.ListEntitiesOptions{Filter: &filter}
	if top > 0 {
		n := int32(min(top, 1000))
		opts.Top = &n
	}
	pager := t.NewListEntitiesPager(opts)
	var out []E
	for pager.More() && (top <= 0 || len(out) < top) {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, transient(err, "list %s", what)
		}
		for _, raw := range page.Entities {
			var e E
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("decode %s: %w", what, err)
			}
			out = append(out, e)
		}
	}
	if top > 0 && len(out) > top {
		out = out[:top]
	}
	return out, nil
}

// transient marks a storage failure: 5xx, throttling and network errors are worth a retry; other
// statuses are internal errors.
func transient(err error, format string, args ...any) error {
	s := statusOf(err)
	if s == 0 || s == 408 || s == 429 || s >= 500 {
		return backup.Wrap(backup.CodeTransient, err, "table storage: "+format, args...)
	}
	return fmt.Errorf("table storage: "+format+": %w", append(args, err)...)
}

// odataString quotes s for an OData filter. Keys are validated before they get here; quoting is the
// second line of defence.
func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// invertedTime makes a row key that sorts newest first.
func invertedTime(t time.Time) string {
	return fmt.Sprintf("%019d", math.MaxInt64-t.UnixNano())
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s) // written by formatTime; empty means zero
	return t
}

// updateEnvRecord is update for a domain record keyed by environment and id (a snapshot, an
// operation): fn sees and returns the domain value, the entity conversions happen here, and setKeys
// puts the keys back after fn so that it cannot move the record.
func updateEnvRecord[D any, E any, PE interface {
	*E
	keyed
	toDomain() D
}](ctx context.Context, t *aztables.Client, namespace, envID, id string, fn backup.UpdateFunc[D],
	fromDomain func(D) PE, setKeys func(*D)) (D, bool, error) {
	next, wrote, err := update(ctx, t, envPartition(namespace, envID), id, func(cur PE, exists bool) (PE, bool, error) {
		var d D
		if exists {
			d = cur.toDomain()
		}
		n, write, err := fn(d, exists)
		if err != nil || !write {
			return cur, false, err
		}
		setKeys(&n)
		return fromDomain(n), true, nil
	})
	if err != nil {
		var zero D
		return zero, false, err
	}
	return next.toDomain(), wrote, nil
}
