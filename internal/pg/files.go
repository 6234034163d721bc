package pg

import (
	"context"
	"fmt"
	"strings"

	"github.com/mxazure/backups/internal/backup"
)

// maxWarnings bounds the individual warnings kept about file rows; the rest are counted in one line, so
// a database with many bad rows cannot bloat the snapshot record.
const maxWarnings = 50

// fileDocumentExists says whether Mendix's file-document table is there; an app without file documents
// may not have it.
const fileDocumentExists = `SELECT to_regclass('public."system$filedocument"') IS NOT NULL`

// fileDocuments selects the rows a snapshot includes (docs/archive-format.md), ordered so that repeated UUIDs,
// whatever their case, are adjacent.
const fileDocuments = `SELECT id, "__uuid__", "size" FROM public."system$filedocument"
WHERE hascontents = true AND deleteafterdownload = false
ORDER BY lower("__uuid__") COLLATE "C", id`

// readFiles reads the file list in the snapshot transaction. Rows stream from the server; only the
// UUID and size of each kept row stay in memory (see File).
func (dump *Dump) readFiles(ctx context.Context) error {
	var exists bool
	if err := dump.tx.QueryRow(ctx, fileDocumentExists).Scan(&exists); err != nil {
		return dump.queryError(ctx, err, "look for table system$filedocument")
	}
	if !exists {
		return nil
	}
	rows, err := dump.tx.Query(ctx, fileDocuments)
	if err != nil {
		return dump.queryError(ctx, err, "read table system$filedocument")
	}
	defer rows.Close()
	var (
		warn  warnings
		files []File
		prev  string
	)
	for rows.Next() {
		var (
			id   int64
			uuid *string
			size *int64
		)
		if err := rows.Scan(&id, &uuid, &size); err != nil {
			return dump.queryError(ctx, err, "read table system$filedocument")
		}
		switch {
		case uuid == nil:
			warn.add("file document %d has no UUID; it is not in the snapshot", id)
		case !isUUID(*uuid):
			warn.add("file document %d has an invalid UUID %q; it is not in the snapshot", id, backup.Truncate(*uuid, 64))
		case strings.EqualFold(*uuid, prev):
			warn.add("file document %d repeats UUID %s; the file is in the snapshot once", id, *uuid)
		default:
			f := File{UUID: *uuid, Size: -1}
			if size != nil {
				f.Size = *size
			}
			files = append(files, f)
			prev = *uuid
		}
	}
	if err := rows.Err(); err != nil {
		return dump.queryError(ctx, err, "read table system$filedocument")
	}
	dump.files, dump.warnings = files, warn.list()
	return nil
}

// warnings keeps the first maxWarnings messages and counts the rest.
type warnings struct {
	kept    []string
	dropped int
}

func (w *warnings) add(format string, args ...any) {
	if len(w.kept) < maxWarnings {
		w.kept = append(w.kept, fmt.Sprintf(format, args...))
		return
	}
	w.dropped++
}

func (w *warnings) list() []string {
	if w.dropped == 0 {
		return w.kept
	}
	return append(w.kept, fmt.Sprintf("%d more file documents were left out of the snapshot or repeated a UUID (see above for the kinds of problem)", w.dropped))
}

func isUUID(s string) bool { _, ok := backup.CanonicalUUID(s); return ok }
