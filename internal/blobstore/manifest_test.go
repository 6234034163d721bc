package blobstore

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// The manifest codec, without Storage: what it writes it reads back, and every way a manifest can be
// damaged is refused with ErrManifestDamaged (the collector must never read damage as fewer files).

func fileUUID(i int) string { return fmt.Sprintf("5a1a0a4e-7d3c-4d8e-9f2c-%012x", i) }

// testEntries are n entries in UUID order, every third without an MD5 (an ETag object).
func testEntries(n int) []backup.ManifestEntry {
	out := make([]backup.ManifestEntry, n)
	for i := range out {
		f := backup.SourceFile{UUID: fileUUID(i + 1), Size: int64(i * 100), ETag: fmt.Sprintf(`"0x%d"`, i)}
		if i%3 != 0 {
			sum := md5.Sum([]byte(f.UUID))
			f.MD5 = sum[:]
		}
		out[i] = backup.ManifestEntry{UUID: f.UUID, Size: f.Size, MD5: f.MD5, Object: backup.ObjectName(f)}
	}
	return out
}

func headerFor(entries []backup.ManifestEntry) backup.ManifestHeader {
	h := backup.ManifestHeader{Format: backup.ManifestFormat, Version: backup.ManifestVersion, Namespace: testNS,
		EnvironmentID: testEnv, SnapshotID: testSnap, CreatedAt: time.Date(2026, 11, 24, 1, 2, 3, 0, time.UTC), Files: len(entries)}
	for _, e := range entries {
		h.FilesBytes += e.Size
	}
	return h
}

func encoded(t *testing.T, h backup.ManifestHeader, entries []backup.ManifestEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := encodeManifest(&buf, h, entries); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipped compresses text as one gzip member.
func gzipped(text string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	io.WriteString(zw, text)
	zw.Close()
	return buf.Bytes()
}

// lines is the decompressed text of a manifest of h and entries, written line by line here rather
// than by the encoder, so that tests can write what the encoder refuses.
func lines(t *testing.T, h any, entries ...any) string {
	t.Helper()
	var b strings.Builder
	for _, v := range append([]any{h}, entries...) {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func decodeAll(data []byte) (backup.ManifestHeader, []backup.ManifestEntry, error) {
	var got []backup.ManifestEntry
	h, err := decodeManifest(bytes.NewReader(data), func(e backup.ManifestEntry) error {
		got = append(got, e)
		return nil
	})
	return h, got, err
}

func TestManifestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		entries := testEntries(n)
		h := headerFor(entries)
		gotH, got, err := decodeAll(encoded(t, h, entries))
		if err != nil {
			t.Fatalf("%d entries: %v", n, err)
		}
		if !gotH.CreatedAt.Equal(h.CreatedAt) || gotH.Files != n || gotH.FilesBytes != h.FilesBytes || gotH.SnapshotID != testSnap {
			t.Errorf("header %+v, want %+v", gotH, h)
		}
		if len(got) != n {
			t.Fatalf("%d entries read, want %d", len(got), n)
		}
		for i := range got {
			if got[i].UUID != entries[i].UUID || got[i].Size != entries[i].Size || got[i].Object != entries[i].Object || !bytes.Equal(got[i].MD5, entries[i].MD5) {
				t.Errorf("entry %d: %+v, want %+v", i, got[i], entries[i])
			}
		}
	}
}

// TestManifestIsGzipOfJSONLines: the format as documented, readable by gzip and a JSON-lines reader.
func TestManifestIsGzipOfJSONLines(t *testing.T) {
	entries := testEntries(2)
	zr, err := gzip.NewReader(bytes.NewReader(encoded(t, backup.ManifestHeader{Namespace: testNS, EnvironmentID: testEnv, SnapshotID: testSnap,
		Files: 2, FilesBytes: 100}, entries)))
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(string(text), "\n")
	if len(ls) != 4 || ls[3] != "" {
		t.Fatalf("%q: want 3 lines, each ended by a line feed", text)
	}
	var h map[string]any
	if err := json.Unmarshal([]byte(ls[0]), &h); err != nil || h["format"] != backup.ManifestFormat || h["version"] != 1.0 || h["files"] != 2.0 {
		t.Errorf("header line %s (%v): the zero format and version are not the current ones", ls[0], err)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(ls[2]), &e); err != nil || e["uuid"] != entries[1].UUID || e["object"] != entries[1].Object {
		t.Errorf("entry line %s (%v)", ls[2], err)
	}
}

// TestDecodeManifestRefusesDamage: each way a manifest can be damaged, and what the error says.
func TestDecodeManifestRefusesDamage(t *testing.T) {
	entries := testEntries(3)
	h := headerFor(entries)
	good := encoded(t, h, entries)
	e0, e1, e2 := entries[0], entries[1], entries[2]
	with := func(e backup.ManifestEntry, f func(*backup.ManifestEntry)) backup.ManifestEntry { f(&e); return e }
	hdr := func(f func(*backup.ManifestHeader)) backup.ManifestHeader { c := h; f(&c); return c }
	second := gzipped(lines(t, h, e0, e1, e2))
	tests := []struct {
		name string
		data []byte
		want string // in the error
	}{
		{"empty", nil, "it is empty"},
		{"not gzip", []byte(lines(t, h, e0, e1, e2)), "not gzip-compressed"},
		{"cut short", good[:len(good)-10], "cut short"},
		{"without its gzip trailer", good[:len(good)-8], "cut short"},
		{"a damaged byte", flip(good, len(good)/2), "damaged"},
		{"a wrong checksum", flip(good, len(good)-6), "compressed data is damaged"},
		{"garbage after the gzip stream", append(bytes.Clone(good), "x"...), "data follows the end of its compressed stream"},
		{"a second gzip stream", append(bytes.Clone(good), second...), "data follows the end of its compressed stream"},
		{"no header", gzipped(""), "no header"},
		{"header not JSON", gzipped("format: mxbackup-manifest\n"), "line 1: the header is not a JSON object"},
		{"another format", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.Format = "tar" }))), `format "tar" version 1`},
		{"another version", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.Version = 2 }), e0, e1, e2)), "version 2"},
		{"an unknown header field", gzipped(strings.Replace(lines(t, h, e0, e1, e2), `"files":3`, `"files":3,"extra":1`, 1)), `unknown field "extra"`},
		{"a header's bad namespace", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.Namespace = "NS" }), e0, e1, e2)), "namespace"},
		{"a header's bad snapshot id", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.SnapshotID = "x" }), e0, e1, e2)), "snapshot id"},
		{"a header's negative count", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.Files = -1 }))), "announces -1 files"},
		{"an entry not JSON", gzipped(lines(t, h, e0) + "{uuid}\n"), "line 3: the line is not a manifest entry"},
		{"an entry not an object", gzipped(lines(t, h, e0) + "[1]\n"), "line 3: the line is not a manifest entry"},
		{"two entries on one line", gzipped(strings.TrimSuffix(lines(t, h, e0), "\n") + lines(t, e1, e2)), "line 2: the line is not a manifest entry"},
		{"an unknown entry field", gzipped(lines(t, h, e0) + `{"uuid":"` + e1.UUID + `","size":100,"object":"` + e1.Object + `","sha":"x"}` + "\n"), `unknown field "sha"`},
		{"an empty line", gzipped(lines(t, h, e0) + "\n" + lines(t, e1, e2)), "line 3: the line is empty"},
		{"no final line feed", gzipped(strings.TrimSuffix(lines(t, h, e0, e1, e2), "\n")), "line 4: the last line does not end with a line feed"},
		{"a line too long", gzipped(lines(t, h) + strings.Repeat(" ", maxManifestLine+1) + "\n"), "longer than"},
		{"an uppercase uuid", gzipped(lines(t, h, with(e0, func(e *backup.ManifestEntry) { e.UUID = strings.ToUpper(e.UUID) }), e1, e2)), "lowercase canonical"},
		{"a uuid that is none", gzipped(lines(t, h, with(e0, func(e *backup.ManifestEntry) { e.UUID = "abc" }), e1, e2)), `uuid "abc"`},
		{"a null entry", gzipped(lines(t, h) + "null\n"), `uuid ""`},
		{"a negative size", gzipped(lines(t, headerFor(nil), with(e0, func(e *backup.ManifestEntry) { e.Size = -1 }))), "negative size"},
		{"an object that is no object's name", gzipped(lines(t, h, with(e0, func(e *backup.ManifestEntry) { e.Object = "../x" }), e1, e2)), "not the name of a store object"},
		{"an object of another file", gzipped(lines(t, h, with(e0, func(e *backup.ManifestEntry) { e.Object = e1.Object }), e1, e2)), "another file or size"},
		{"an object of another size", gzipped(lines(t, h, e0, with(e1, func(e *backup.ManifestEntry) { e.Size = 5 }), e2)), "another file or size"},
		{"an object not of the entry's MD5", gzipped(lines(t, h, e0, with(e1, func(e *backup.ManifestEntry) { e.MD5 = make([]byte, 16) }), e2)), "not the object of its MD5"},
		{"an MD5 of the wrong length", gzipped(lines(t, h, e0, with(e1, func(e *backup.ManifestEntry) { e.MD5 = e.MD5[:15] }), e2)), "MD5 of 15 bytes"},
		{"a duplicate", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.FilesBytes = 0 }), e0, e0, e0)), "listed twice"},
		{"out of order", gzipped(lines(t, h, e0, e2, e1)), "not in UUID order"},
		{"more entries than announced", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.Files = 2 }), e0, e1, e2)), "more entries than the 2"},
		{"fewer entries than announced", gzipped(lines(t, h, e0, e1)), "2 entries where its header announces 3"},
		{"another sum of sizes", gzipped(lines(t, hdr(func(h *backup.ManifestHeader) { h.FilesBytes++ }), e0, e1, e2)), "its files have 300 bytes where its header announces 301"},
		{"sizes that overflow", gzipped(lines(t, backup.ManifestHeader{Format: h.Format, Version: 1, Namespace: testNS, EnvironmentID: testEnv, SnapshotID: testSnap, Files: 2, FilesBytes: math.MaxInt64},
			sized(1, math.MaxInt64), sized(2, 1))), "add up to more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := decodeAll(tt.data)
			if !errors.Is(err, ErrManifestDamaged) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v (after %d entries), want an ErrManifestDamaged saying %q", err, len(got), tt.want)
			}
		})
	}
	if _, got, err := decodeAll(good); err != nil || len(got) != 3 {
		t.Fatalf("the undamaged manifest: %d entries, %v", len(got), err)
	}
}

func sized(i int, size int64) backup.ManifestEntry {
	f := backup.SourceFile{UUID: fileUUID(i), Size: size, ETag: `"1"`}
	return backup.ManifestEntry{UUID: f.UUID, Size: f.Size, Object: backup.ObjectName(f)}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x55
	return c
}

// TestEncodeManifestRefusesWhatItCouldNotRead: nothing is written for entries that disagree with the
// header or with each other.
func TestEncodeManifestRefusesWhatItCouldNotRead(t *testing.T) {
	entries := testEntries(3)
	h := headerFor(entries)
	swapped := []backup.ManifestEntry{entries[1], entries[0], entries[2]}
	badObject := append([]backup.ManifestEntry(nil), entries...)
	badObject[2].Object = entries[1].Object
	for name, c := range map[string]struct {
		h       backup.ManifestHeader
		entries []backup.ManifestEntry
		want    string
	}{
		"count":       {headerFor(entries[:2]), entries, "more entries than the 2"},
		"fewer":       {h, entries[:2], "2 entries where its header announces 3"},
		"bytes":       {func() backup.ManifestHeader { c := h; c.FilesBytes = 1; return c }(), entries, "300 bytes where its header announces 1"},
		"order":       {h, swapped, "not in UUID order"},
		"object":      {h, badObject, "another file or size"},
		"format":      {func() backup.ManifestHeader { c := h; c.Format = "x"; return c }(), entries, `format "x"`},
		"version":     {func() backup.ManifestHeader { c := h; c.Version = 2; return c }(), entries, "version 2"},
		"environment": {func() backup.ManifestHeader { c := h; c.EnvironmentID = ""; return c }(), entries, "environment id"},
	} {
		var buf bytes.Buffer
		err := encodeManifest(&buf, c.h, c.entries)
		if !errors.Is(err, ErrManifestDamaged) || !strings.Contains(err.Error(), c.want) || buf.Len() != 0 {
			t.Errorf("%s: got %v and %d bytes written, want a refusal saying %q and nothing written", name, err, buf.Len(), c.want)
		}
	}
}

// TestDecodeManifestPassesOnReadErrorsAndFnErrors: a read that fails is the reader's error, not
// damage (a retry may succeed); fn's error stops the read and comes back as is.
func TestDecodeManifestPassesOnReadErrorsAndFnErrors(t *testing.T) {
	entries := testEntries(50)
	data := encoded(t, headerFor(entries), entries)
	readErr := errors.New("connection reset")
	for _, at := range []int{0, 5, len(data) / 2, len(data) - 1} {
		_, err := decodeManifest(io.MultiReader(bytes.NewReader(data[:at]), &failingReader{readErr}), func(backup.ManifestEntry) error { return nil })
		if err != readErr {
			t.Errorf("failing after %d bytes: got %v, want the reader's error as is", at, err)
		}
	}
	stop := errors.New("enough")
	calls := 0
	_, err := decodeManifest(bytes.NewReader(data), func(backup.ManifestEntry) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("got %v after %d calls, want fn's own error after 1", err, calls)
	}
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

// TestDecodeManifestMemoryStaysFlat: reading 300,000 entries (about 40 MB of JSON lines, generated
// as they are read) holds about as much memory at the last entry as at the first.
func TestDecodeManifestMemoryStaysFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("reads a large manifest")
	}
	const n = 300_000
	pr, pw := io.Pipe()
	go func() {
		entries := make([]backup.ManifestEntry, 0, 1000)
		zw := gzip.NewWriter(pw)
		h := backup.ManifestHeader{Format: backup.ManifestFormat, Version: 1, Namespace: testNS, EnvironmentID: testEnv, SnapshotID: testSnap, Files: n}
		for i := range n {
			h.FilesBytes += int64(i)
		}
		writeLine(zw, 1, h)
		for i := 0; i < n; i += 1000 {
			entries = entries[:0]
			for j := i; j < i+1000; j++ {
				entries = append(entries, sized(j+1, int64(j)))
			}
			for _, e := range entries {
				writeLine(zw, 0, e)
			}
		}
		pw.CloseWithError(zw.Close())
	}()
	var first, last uint64
	count := 0
	_, err := decodeManifest(pr, func(backup.ManifestEntry) error {
		count++
		if count == 1000 || count == n {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if count == 1000 {
				first = m.HeapAlloc
			} else {
				last = m.HeapAlloc
			}
		}
		return nil
	})
	if err != nil || count != n {
		t.Fatalf("%d entries, %v", count, err)
	}
	if grew := int64(last) - int64(first); grew > 4<<20 {
		t.Errorf("the heap grew by %d bytes while reading %d entries; the decoder keeps what it read", grew, n)
	}
}
