package tablestore

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"reflect"
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
func get(ctx context.Context, t table, pk, rk string, v any) (etag azcore.ETag, found bool, err error) {
	resp, err := t.GetEntity(ctx, pk, rk, nil)
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, transient(err, "read %s %s/%s", t.name, pk, rk)
	}
	if err := decodeEntity(resp.Value, v); err != nil {
		return "", false, fmt.Errorf("table storage: decode %s %s/%s: %w", t.name, pk, rk, err)
	}
	return resp.ETag, true, nil
}

// upsert writes v unconditionally (insert or replace).
func upsert(ctx context.Context, t table, v keyed) error {
	b, err := encodeEntity(t.name, v)
	if err != nil {
		return err
	}
	if _, err := t.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		pk, rk := v.keys()
		return transient(err, "write %s %s/%s", t.name, pk, rk)
	}
	return nil
}

// insert adds v; it fails with errConflict when the entity exists.
func insert(ctx context.Context, t table, v keyed) error {
	b, err := encodeEntity(t.name, v)
	if err != nil {
		return err
	}
	if _, err := t.AddEntity(ctx, b, nil); err != nil {
		if statusOf(err) == http.StatusConflict {
			if sameAsStored(ctx, t, v, b) {
				// The SDK retries an insert whose answer was lost; the first try wrote it.
				return nil
			}
			return errConflict
		}
		pk, rk := v.keys()
		return transient(err, "insert %s %s/%s", t.name, pk, rk)
	}
	return nil
}

// replaceIfMatch replaces v if the stored ETag is still etag; errConflict otherwise.
func replaceIfMatch(ctx context.Context, t table, v keyed, etag azcore.ETag) error {
	b, err := encodeEntity(t.name, v)
	if err != nil {
		return err
	}
	_, err = t.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
	if isPreconditionFailed(err) {
		return errConflict
	}
	if err != nil {
		pk, rk := v.keys()
		return transient(err, "update %s %s/%s", t.name, pk, rk)
	}
	return nil
}

// remove deletes an entity, if etag is not empty only while it is unchanged. A missing entity is not an
// error; a changed one is errConflict.
func remove(ctx context.Context, t table, pk, rk string, etag azcore.ETag) error {
	var opts *aztables.DeleteEntityOptions
	if etag != "" {
		opts = &aztables.DeleteEntityOptions{IfMatch: &etag}
	}
	_, err := t.DeleteEntity(ctx, pk, rk, opts)
	switch {
	case err == nil || isNotFound(err):
		return nil
	case statusOf(err) == http.StatusPreconditionFailed:
		return errConflict
	default:
		return transient(err, "delete %s %s/%s", t.name, pk, rk)
	}
}

var errConflict = backup.Errorf(backup.CodeConflict, "the record was changed by someone else; try again")

// update runs an ETag-guarded read-modify-write: read into a fresh E, let decide map it to the next
// entity, write it conditionally, and start over when a concurrent writer won.
func update[E any, PE interface {
	*E
	keyed
}](ctx context.Context, t table, pk, rk string, decide func(cur PE, exists bool) (PE, bool, error)) (PE, bool, error) {
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
func query[E any](ctx context.Context, t table, filter string, top int, what string) ([]E, error) {
	var out []E
	err := pages(ctx, t, filter, top, what, false, func(raw []byte) (bool, error) {
		var e E
		if err := decodeEntity(raw, &e); err != nil {
			return false, fmt.Errorf("table storage: decode %s: %w", what, err)
		}
		out = append(out, e)
		return top <= 0 || len(out) < top, nil
	})
	return out, err
}

// pages calls fn with every entity matching filter (pages of at most top, or 1,000, entities), as
// stored, until fn returns false or an error. With etags, each entity carries its "odata.etag"
// (decodeEntityETag reads it); without, the entities come without OData metadata: no ETag and no type
// annotations, which the codec does not need (an Edm.Int64 is a JSON string either way). That is less
// for Table Storage to send and for the SDK to parse and marshal again: a list of 1,000 snapshots takes
// about a sixth less time (BenchmarkListSnapshots).
func pages(ctx context.Context, t table, filter string, top int, what string, etags bool, fn func(raw []byte) (bool, error)) error {
	return list(ctx, t, listQuery{filter: filter, top: top, etags: etags}, what, fn)
}

// listQuery is what a paged read asks for.
type listQuery struct {
	filter string // "" for every entity: no $filter is sent
	sel    string // the properties to return, comma-separated ($select); "" for all
	top    int    // the page size, at most 1,000 (Azure's most); 0 for 1,000
	etags  bool   // as for pages
}

// list is pages with a query's every option. Only the page being read is in memory.
func list(ctx context.Context, t table, q listQuery, what string, fn func(raw []byte) (bool, error)) error {
	opts := &aztables.ListEntitiesOptions{}
	if q.filter != "" {
		opts.Filter = &q.filter
	}
	if q.sel != "" {
		opts.Select = &q.sel
	}
	if !q.etags {
		format := aztables.MetadataFormatNone
		opts.Format = &format
	}
	if q.top > 0 {
		n := int32(min(q.top, 1000))
		opts.Top = &n
	}
	pager := t.NewListEntitiesPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return transient(err, "list %s", what)
		}
		for _, raw := range page.Entities {
			more, err := fn(raw)
			if err != nil || !more {
				return err
			}
		}
	}
	return nil
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

// updateEnvRecord is update for a domain record keyed by environment and id (a snapshot, an
// operation): fn sees and returns the domain value, the entity conversions happen here, and setKeys
// puts the keys back after fn so that it cannot move the record.
func updateEnvRecord[D any, E any, PE interface {
	*E
	keyed
	toDomain() D
}](ctx context.Context, t table, namespace, envID, id string, fn backup.UpdateFunc[D],
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

// sameAsStored reports whether the stored entity with v's keys encodes exactly as b, the body of an
// insert of v: then a 409 for that insert is our own earlier try, not another writer's record.
func sameAsStored(ctx context.Context, t table, v keyed, b []byte) bool {
	stored := reflect.New(reflect.TypeOf(v).Elem()).Interface().(keyed)
	pk, rk := v.keys()
	if _, found, err := get(ctx, t, pk, rk, stored); err != nil || !found {
		return false
	}
	sb, err := encodeEntity(t.name, stored)
	return err == nil && bytes.Equal(sb, b)
}
