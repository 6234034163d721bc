package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

func TestInspectAccepts(t *testing.T) {
	validTar := tarOf(t, validEntries()...)
	wantFiles := []FileEntry{{uuidA, 5}, {uuidB, 6}}
	tests := []struct {
		name         string
		data         []byte
		limits       Limits
		wantFiles    []FileEntry
		wantMeta     *Metadata // nil: no metadata
		wantWarnings []string  // substrings, in order
	}{
		{
			name: "nested tree", data: gz(validTar), wantFiles: wantFiles,
			wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
		{
			name:      "flat tree",
			data:      tgz(t, reg("db/db.backup", string(testDump)), reg("tree/"+uuidA, "hello"), reg("tree/"+uuidB, "world!")),
			wantFiles: wantFiles,
		},
		{
			name: "leading ./ and directory entries",
			data: tgz(t, dir("./"), reg("./.metadata", testMetaJSON), dir("./db/"), reg("./db/db.backup", string(testDump)),
				dir("./tree/"), dir("./tree/0d/"), dir("./tree/0d/3e/"), reg("./"+TreeName(uuidA), "hello"), reg("././tree/"+uuidB, "world!")),
			wantFiles: wantFiles, wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
		{
			name:      "uppercase UUID",
			data:      tgz(t, reg("db/db.backup", string(testDump)), reg("tree/0D/3E/"+strings.ToUpper(uuidA), "hello")),
			wantFiles: []FileEntry{{uuidA, 5}},
		},
		{
			name: "no files", data: tgz(t, reg("db/db.backup", string(testDump))),
		},
		{
			name: "PAX global header, as git archive writes",
			data: tgz(t, entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "0123abcd"}}},
				reg("db/db.backup", string(testDump))),
		},
		{
			name:         "extra root entries",
			data:         tgz(t, reg("db/db.backup", string(testDump)), reg("README.txt", "hi"), dir("logs/"), reg("logs/a.log", "x"), reg("db/extra.sql", "x")),
			wantWarnings: []string{`entry "README.txt" ignored`, `directory "logs/" ignored`, `entry "logs/a.log" ignored`, `entry "db/extra.sql" ignored`},
		},
		{
			name: "malformed metadata", data: tgz(t, reg(".metadata", "{not json"), reg("db/db.backup", string(testDump))),
			wantWarnings: []string{".metadata ignored: not a JSON object"},
		},
		{
			name:     "metadata with numbers, extra and missing fields",
			data:     tgz(t, reg(".metadata", `{"duration":12,"dumpSize":"3000","extra":{"a":1},"modelVersion":"2.1"}`), reg("db/db.backup", string(testDump))),
			wantMeta: &Metadata{Duration: "12", DumpSize: "3000", ModelVersion: "2.1"},
		},
		{
			name:         "metadata field of the wrong type",
			data:         tgz(t, reg(".metadata", `{"duration":"1","modelVersion":{"v":1},"filesSize":[1]}`), reg("db/db.backup", string(testDump))),
			wantMeta:     &Metadata{Duration: "1"},
			wantWarnings: []string{".metadata: fields filesSize, modelVersion ignored: not strings"},
		},
		{
			name: "single zero record at the end", data: gz(validTar[:len(validTar)-512]), wantFiles: wantFiles,
			wantMeta:     &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
			wantWarnings: []string{"single zero record"},
		},
		{
			name: "archive of exactly the size limit", data: gz(validTar), limits: Limits{MaxArchiveBytes: int64(len(gz(validTar)))},
			wantFiles: wantFiles, wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
		{
			// As this service wrote archives before they became one member, and as other tools may.
			name: "several gzip members", data: slices.Concat(gz(validTar[:1000]), gz(validTar[1000:5000]), gz(validTar[5000:])),
			wantFiles: wantFiles, wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
		{
			name: "made by GNU tar", data: gnuTar(t, validFiles()),
			wantFiles: []FileEntry{{uuidA, 5}}, wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
		{
			name: "made by GNU tar, PAX format", data: gnuTar(t, validFiles(), "--format=pax"),
			wantFiles: []FileEntry{{uuidA, 5}}, wantMeta: &Metadata{"0", "3000", "1.0.0.40", "9730584", "11"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Inspect(context.Background(), bytes.NewReader(tt.data), tt.limits, nil)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if m.DumpSize != int64(len(testDump)) || m.DumpVersion != "1.14.0" {
				t.Errorf("dump %d bytes version %q, want %d 1.14.0", m.DumpSize, m.DumpVersion, len(testDump))
			}
			slices.SortFunc(m.Files, func(a, b FileEntry) int { return strings.Compare(a.UUID, b.UUID) })
			if !slices.Equal(m.Files, tt.wantFiles) {
				t.Errorf("files %v, want %v", m.Files, tt.wantFiles)
			}
			var size int64
			for _, f := range tt.wantFiles {
				size += f.Size
			}
			if m.FilesSize != size {
				t.Errorf("FilesSize %d, want %d", m.FilesSize, size)
			}
			if (m.Metadata == nil) != (tt.wantMeta == nil) || m.Metadata != nil && *m.Metadata != *tt.wantMeta {
				t.Errorf("metadata %+v, want %+v", m.Metadata, tt.wantMeta)
			}
			if len(m.Warnings) != len(tt.wantWarnings) {
				t.Fatalf("warnings %q, want %d like %q", m.Warnings, len(tt.wantWarnings), tt.wantWarnings)
			}
			for i, w := range tt.wantWarnings {
				if !strings.Contains(m.Warnings[i], w) {
					t.Errorf("warning %d %q, want it to contain %q", i, m.Warnings[i], w)
				}
			}
			if m.CompressedSize != int64(len(tt.data)) || m.SHA256 != sum(tt.data) {
				t.Errorf("CompressedSize %d SHA256 %s, want %d %s", m.CompressedSize, m.SHA256, len(tt.data), sum(tt.data))
			}
		})
	}
}

func TestInspectWarningsAreBounded(t *testing.T) {
	entries := []entry{reg("db/db.backup", string(testDump))}
	for i := range 200 {
		entries = append(entries, reg("junk"+strings.Repeat("x", i%7)+string(rune('a'+i%26)), ""))
	}
	m, err := Inspect(context.Background(), bytes.NewReader(tgz(t, entries...)), Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != maxWarnings+1 || m.Warnings[maxWarnings] != "150 more warnings not shown" {
		t.Errorf("%d warnings ending %q, want %d ending with a count of 150", len(m.Warnings), m.Warnings[len(m.Warnings)-1], maxWarnings+1)
	}
}

func TestInspectVisit(t *testing.T) {
	data := tgz(t, validEntries()...)
	var got []string
	contents := map[string]string{}
	_, err := Inspect(context.Background(), bytes.NewReader(data), Limits{}, func(e Entry, r io.Reader) error {
		got = append(got, e.Name)
		if e.Kind == EntryFile {
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			contents[e.UUID] = string(b)
			if int64(len(b)) != e.Size {
				t.Errorf("%s: read %d bytes, Size %d", e.Name, len(b), e.Size)
			}
			return nil
		}
		// Read part of the dump only: the rest must be skipped.
		head := make([]byte, 100)
		if _, err := io.ReadFull(r, head); err != nil {
			return err
		}
		if e.Kind != EntryDatabase || e.Size != int64(len(testDump)) || !bytes.Equal(head, testDump[:100]) {
			t.Errorf("database entry %+v starts %q, want %q", e, head[:8], testDump[:8])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{DumpName, TreeName(uuidA), TreeName(uuidB)}
	if !slices.Equal(got, want) || contents[uuidA] != "hello" || contents[uuidB] != "world!" {
		t.Errorf("visited %q with %q, want %q", got, contents, want)
	}
}

func TestInspectVisitErrors(t *testing.T) {
	errVisit := errors.New("pg_restore --list failed")
	valid := tgz(t, validEntries()...)
	validTar := tarOf(t, validEntries()...)
	tests := []struct {
		name  string
		data  []byte
		visit func(Entry, io.Reader) error
		check func(t *testing.T, err error)
	}{
		{
			name: "visit fails",
			data: valid,
			visit: func(e Entry, r io.Reader) error {
				if e.Kind == EntryDatabase {
					return errVisit
				}
				return nil
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, errVisit) || !strings.HasPrefix(err.Error(), "db/db.backup: ") {
					t.Errorf("got %v, want %v prefixed with the entry name", err, errVisit)
				}
			},
		},
		{
			name: "archive truncated while visit reads",
			data: gz(validTar[:1024+512+1000]), // inside the dump's data
			visit: func(e Entry, r io.Reader) error {
				_, err := io.ReadAll(r)
				return err
			},
			check: func(t *testing.T, err error) {
				if backup.CodeOf(err) != backup.CodeInvalidParameters || !strings.Contains(err.Error(), "archive is truncated") {
					t.Errorf("got %v, want the truncation", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Inspect(context.Background(), bytes.NewReader(tt.data), Limits{}, tt.visit)
			tt.check(t, err)
		})
	}
}

func TestInspectSourceErrors(t *testing.T) {
	valid := tgz(t, validEntries()...)
	t.Run("reader fails", func(t *testing.T) {
		_, err := Inspect(context.Background(), &failingReader{data: valid[:len(valid)/2], err: errRead}, Limits{}, nil)
		if !errors.Is(err, errRead) || backup.CodeOf(err) == backup.CodeInvalidParameters {
			t.Errorf("got %v, want %v and not a rejection of the archive", err, errRead)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Inspect(ctx, bytes.NewReader(valid), Limits{}, nil)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want %v", err, context.Canceled)
		}
	})
}
