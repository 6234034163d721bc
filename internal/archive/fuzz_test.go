package archive

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// fuzzLimits are small so that the fuzzer reaches them.
var fuzzLimits = Limits{MaxArchiveBytes: 256 << 10, MaxEntryBytes: 64 << 10, MaxUnpackedBytes: 1 << 20, MaxEntries: 200}

// FuzzInspect checks that Inspect never panics, never reads more than the archive limit (plus the one
// byte that tells "at the limit" from "over it"), and either accepts an archive or rejects it as invalid
// parameters. Its seeds are a builder archive, hand-made valid archives and every hostile case.
func FuzzInspect(f *testing.F) {
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, Options{ChunkSize: 1024, ModTime: testModTime})
	if _, err := b.WriteDatabase(bytes.NewReader(testDump)); err != nil {
		f.Fatal(err)
	}
	for i, fl := range makeFiles(0, 10, 700, 5000) {
		if err := b.AddFile(fl.uuid, int64(len(fl.data)), bytes.NewReader(fl.data)); err != nil {
			f.Fatalf("file %d: %v", i, err)
		}
	}
	if _, err := b.Finish(testMeta); err != nil {
		f.Fatal(err)
	}
	f.Add(sink.blob)
	f.Add(tgz(f, validEntries()...))
	f.Add(tgz(f, dir("./"), reg("./db/db.backup", string(testDump)), reg("./tree/"+uuidA, "x")))
	for _, tc := range hostileCases(f) {
		if len(tc.data) <= int(fuzzLimits.MaxArchiveBytes) {
			f.Add(tc.data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &countingReader{r: bytes.NewReader(data)}
		n := 0
		_, err := Inspect(context.Background(), src, fuzzLimits, func(e Entry, r io.Reader) error {
			n++
			if n%2 == 0 {
				_, err := io.Copy(io.Discard, r)
				return err
			}
			return nil
		})
		if err != nil && backup.CodeOf(err) != backup.CodeInvalidParameters {
			t.Errorf("got %v, want nil or code %s", err, backup.CodeInvalidParameters)
		}
		if err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Error("empty error message")
		}
		if src.count() > fuzzLimits.MaxArchiveBytes+1 {
			t.Errorf("read %d bytes, limit %d", src.count(), fuzzLimits.MaxArchiveBytes)
		}
	})
}
