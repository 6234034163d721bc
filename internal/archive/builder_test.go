package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	stdgzip "compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

var testModTime = time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)

func testOptions() Options {
	return Options{ChunkSize: 64 << 10, Concurrency: 3, Uploads: 3, ModTime: testModTime}
}

var testMeta = Metadata{Duration: "42", ModelVersion: "1.0.0.40", DatabaseSize: "9730584"}

// makeFiles returns files of the given sizes with random UUIDs, half text and half random bytes.
func makeFiles(sizes ...int) []testFile {
	rng := newRand(99)
	files := make([]testFile, len(sizes))
	for i, n := range sizes {
		data := make([]byte, n)
		if i%2 == 0 {
			fillText(data, uint64(i))
		} else {
			fillRandom(data, uint64(i))
		}
		files[i] = testFile{uuid: uuidFor(rng), data: data}
	}
	return files
}

func manyFileSizes() []int {
	sizes := []int{0, 0, 0, 1, 511, 512, 513, 16 << 10, 16<<10 + 1, 64 << 10, 64<<10 + 1, 200 << 10, 300 << 10}
	rng := newRand(5)
	for range 300 {
		sizes = append(sizes, rng.IntN(12<<10))
	}
	return sizes
}

func TestRoundTrip(t *testing.T) {
	dump := makeDump(3*(64<<10)+12345, 1)
	tests := []struct {
		name  string
		files []testFile
	}{
		{"no files", nil},
		{"one file", makeFiles(1000)},
		{"many files, some empty, some larger than a chunk", makeFiles(manyFileSizes()...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			blob, res, sink := buildArchive(t, testOptions(), dump, tt.files, testMeta)
			verifyArchive(t, blob, res, sink, dump, tt.files, true)
		})
	}
}

func TestDumpSizes(t *testing.T) {
	const chunk = 4096
	for _, n := range []int{0, 1, 511, 512, 513, chunk, chunk + 1, 3*chunk - 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			checkNoLeak(t)
			opts := testOptions()
			opts.ChunkSize = chunk
			dump := makeDump(n, uint64(n))
			files := makeFiles(100, chunk*2)
			blob, res, sink := buildArchive(t, opts, dump, files, testMeta)
			verifyArchive(t, blob, res, sink, dump, files, n >= 8)
		})
	}
}

// verifyArchive checks blob with Go's readers, GNU tar, Python's tarfile and Inspect. Dumps shorter
// than the custom-format header are expected to be rejected by Inspect.
func verifyArchive(t *testing.T, blob []byte, res Result, sink *memSink, dump []byte, files []testFile, validDump bool) {
	t.Helper()
	verifySplicedArchive(t, blob, res, sink, dump, files, validDump, nil)
}

// verifySplicedArchive is verifyArchive for an archive whose dump was spliced from spliced, the deflate
// bytes of a dump blob (nil when it was written with WriteDatabase); see checkBlocks.
func verifySplicedArchive(t *testing.T, blob []byte, res Result, sink *memSink, dump []byte, files []testFile, validDump bool, spliced []byte) {
	t.Helper()
	want := map[string][]byte{DumpName: dump}
	var filesSize int64
	for _, f := range files {
		want[TreeName(f.uuid)] = f.data
		filesSize += int64(len(f.data))
	}

	// Go: compress/gzip (multistream) and archive/tar.
	got, order := readWithGo(t, blob)
	if len(order) < 2 || order[0] != MetadataName || order[1] != DumpName {
		t.Errorf("first entries %q, want %q then %q", order[:min(2, len(order))], MetadataName, DumpName)
	}
	meta := checkMetadata(t, got[MetadataName], int64(len(dump)), filesSize)
	delete(got, MetadataName)
	if len(got) != len(want) {
		t.Errorf("archive/tar: %d entries besides .metadata, want %d", len(got), len(want))
	}
	for name, data := range want {
		if !bytes.Equal(got[name], data) {
			t.Errorf("archive/tar: %s: got %d bytes, want %d (or different content)", name, len(got[name]), len(data))
		}
	}

	// GNU tar, listing and extracting.
	listed := gnuList(t, blob)
	if len(listed) != len(want)+1 {
		t.Errorf("tar -tzvf: %d entries, want %d", len(listed), len(want)+1)
	}
	for _, m := range listed {
		if data, ok := want[m.name]; m.name != MetadataName && (!ok || int64(len(data)) != m.size) {
			t.Errorf("tar -tzvf: unexpected %s of %d bytes", m.name, m.size)
		}
	}
	checkExtracted(t, gnuExtract(t, blob), want, len(files) > 0)

	// Python's tarfile, from a file and streaming from a pipe.
	for _, streaming := range []bool{false, true} {
		py := pythonList(t, blob, streaming)
		if len(py) != len(want)+1 {
			t.Errorf("python tarfile (streaming %v): %d members, want %d", streaming, len(py), len(want)+1)
		}
		for _, m := range py {
			if data, ok := want[m.name]; m.name != MetadataName && (!ok || int64(len(data)) != m.size || sum(data) != m.sum) {
				t.Errorf("python tarfile (streaming %v): unexpected %s of %d bytes", streaming, m.name, m.size)
			}
		}
	}

	// One gzip member holding the whole tar.
	if one, all := checkOneMember(t, blob), gunzip(t, blob); !bytes.Equal(one, all) {
		t.Errorf("the gzip member inflates to %d bytes, the whole file to %d", len(one), len(all))
	}

	checkBlocks(t, sink, res, spliced)
	if res.Size != int64(len(blob)) || res.DumpSize != int64(len(dump)) || res.FilesSize != filesSize || res.Files != len(files) {
		t.Errorf("Result %+v, want Size %d DumpSize %d FilesSize %d Files %d", res, len(blob), len(dump), filesSize, len(files))
	}

	m, err := Inspect(context.Background(), bytes.NewReader(blob), Limits{}, nil)
	if !validDump {
		if err == nil || !strings.Contains(err.Error(), "not a PostgreSQL custom-format dump") {
			t.Errorf("Inspect of a %d-byte dump: got %v, want a rejection of the dump", len(dump), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if m.SHA256 != sum(blob) || m.CompressedSize != int64(len(blob)) {
		t.Errorf("Inspect: SHA256 %s size %d, want %s %d", m.SHA256, m.CompressedSize, sum(blob), len(blob))
	}
	if m.DumpSize != int64(len(dump)) || m.DumpVersion != "1.14.0" || m.FilesSize != filesSize || len(m.Files) != len(files) {
		t.Errorf("Inspect: dump %d version %q files %d size %d, want %d 1.14.0 %d %d",
			m.DumpSize, m.DumpVersion, len(m.Files), m.FilesSize, len(dump), len(files), filesSize)
	}
	if m.Metadata == nil || *m.Metadata != meta || len(m.Warnings) != 0 {
		t.Errorf("Inspect: metadata %+v warnings %q, want %+v and none", m.Metadata, m.Warnings, meta)
	}
}

// checkMetadata checks that .metadata is a JSON object of five strings with the right sizes.
func checkMetadata(t *testing.T, data []byte, dumpSize, filesSize int64) Metadata {
	t.Helper()
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf(".metadata %q: %v", data, err)
	}
	for _, k := range []string{"duration", "dumpSize", "modelVersion", "databaseSize", "filesSize"} {
		if _, ok := fields[k].(string); !ok {
			t.Errorf(".metadata field %s = %#v, want a string", k, fields[k])
		}
	}
	if len(fields) != 5 {
		t.Errorf(".metadata has %d fields, want 5: %s", len(fields), data)
	}
	want := testMeta
	want.DumpSize = strconv.FormatInt(dumpSize, 10)
	want.FilesSize = strconv.FormatInt(filesSize, 10)
	var got Metadata
	_ = json.Unmarshal(data, &got)
	if got != want {
		t.Errorf(".metadata = %+v, want %+v", got, want)
	}
	return got
}

func checkExtracted(t *testing.T, dir string, want map[string][]byte, wantTree bool) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == MetadataName {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		seen++
		if w, ok := want[rel]; !ok || !bytes.Equal(w, data) {
			t.Errorf("tar -xzf: %s: unexpected file or content (%d bytes)", rel, len(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("tar -xzf: %d files besides .metadata, want %d", seen, len(want))
	}
	if _, err := os.Stat(filepath.Join(dir, "tree")); (err == nil) != wantTree {
		t.Errorf("tar -xzf: tree/ exists = %v, want %v", err == nil, wantTree)
	}
}

// checkBlocks checks the committed block list: IDs of equal length naming the streams in commit order;
// the gzip header at the start of the first block; every block but the last a run of deflate blocks
// that inflates on its own (no reference to an earlier block) and ends on a sync flush; the last block
// an empty final deflate block and the gzip trailer. When spliced is not nil, the first dump blocks
// must be exactly its bytes; they are checked as one run, since they are cut anywhere in its segments.
var commitOrderRE = regexp.MustCompile(`^h+d*f*t+z$`)

func checkBlocks(t *testing.T, sink *memSink, res Result, spliced []byte) {
	t.Helper()
	if sink.commits != 1 || len(res.Blocks) != len(sink.ids) {
		t.Errorf("commits %d, Result.Blocks %d, committed %d blocks; want 1 commit of Result.Blocks", sink.commits, len(res.Blocks), len(sink.ids))
	}
	var kinds []byte
	var run []byte // the spliced blocks seen so far
	for i, id := range sink.ids {
		raw, _ := base64.StdEncoding.DecodeString(id)
		if len(id) != len(sink.ids[0]) {
			t.Errorf("block ID %q: length %d, want %d like the first", id, len(id), len(sink.ids[0]))
		}
		kinds = append(kinds, raw[0])
		data := sink.blocks[id]
		if raw[0] == 'd' && len(run) < len(spliced) {
			if run = append(run, data...); len(run) >= len(spliced) {
				if !bytes.Equal(run, spliced) {
					t.Errorf("the spliced blocks hold %d bytes that are not the %d of the dump's deflate segments", len(run), len(spliced))
				}
				data = run // checked below as one block
			} else {
				continue
			}
		}
		if i == 0 {
			if len(data) < gzipHeaderLen || !bytes.HasPrefix(data, []byte{0x1f, 0x8b, 8, 0}) {
				t.Errorf("first block %s does not start with a gzip header: % x", raw, data[:min(len(data), gzipHeaderLen)])
				continue
			}
			data = data[gzipHeaderLen:]
		}
		if i == len(sink.ids)-1 {
			if len(data) != 10 || data[0] != 0x03 || data[1] != 0x00 {
				t.Errorf("last block %s is % x, want 03 00 (an empty final block) and the 8-byte trailer", raw, data)
			}
			continue
		}
		if !bytes.HasSuffix(data, []byte{0, 0, 0xff, 0xff}) {
			t.Errorf("block %s does not end on a sync flush", raw)
		}
		// With an empty final block appended, a block is a whole raw deflate stream.
		if _, err := io.Copy(io.Discard, flate.NewReader(bytes.NewReader(append(bytes.Clone(data), 0x03, 0x00)))); err != nil {
			t.Errorf("block %s does not inflate on its own: %v", raw, err)
		}
	}
	if len(run) < len(spliced) {
		t.Errorf("the dump blocks hold %d bytes, fewer than the %d of the spliced segments", len(run), len(spliced))
	}
	if !commitOrderRE.Match(kinds) {
		t.Errorf("streams in commit order %q, want head, dump, large files, tree, gzip trailer", kinds)
	}
}

// gunzip decompresses every gzip member of blob, as compress/gzip does by default.
func gunzip(t *testing.T, blob []byte) []byte {
	t.Helper()
	zr, err := stdgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestArchiveIsOneGzipMember: at every level, the archive is one gzip member whose trailer has the
// CRC-32 and length of the whole tar, although its blocks were compressed in parallel, the head was
// staged last and committed first, and a large file that failed left compressed blocks that are not
// committed.
func TestArchiveIsOneGzipMember(t *testing.T) {
	for _, level := range []int{1, 6, 9} {
		t.Run(fmt.Sprint("level ", level), func(t *testing.T) {
			checkNoLeak(t)
			opts := testOptions()
			opts.ChunkSize = 16 << 10
			opts.Level = level
			sink := newMemSink()
			b := NewBuilder(context.Background(), sink, opts)
			dump := makeDump(100<<10+3, 2)
			if _, err := b.WriteDatabase(bytes.NewReader(dump)); err != nil {
				t.Fatal(err)
			}
			files := makeFiles(10, 3000, 50<<10, 0, 70<<10+1)
			for _, f := range files {
				if err := b.AddFile(f.uuid, int64(len(f.data)), bytes.NewReader(f.data)); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.AddFile(uuidFor(newRand(8)), 60<<10, &failingReader{data: make([]byte, 40<<10), err: errRead}); !errors.Is(err, errRead) {
				t.Fatalf("AddFile of a failing reader: got %v, want %v", err, errRead)
			}
			res, err := b.Finish(testMeta)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Blocks) < 10 || sink.staged <= len(res.Blocks) {
				t.Fatalf("%d blocks committed of %d staged, want at least 10 and some left out", len(res.Blocks), sink.staged)
			}
			tarBytes := checkOneMember(t, sink.blob)
			tr := tar.NewReader(bytes.NewReader(tarBytes))
			var names []string
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("archive/tar over the inflated member: %v", err)
				}
				names = append(names, hdr.Name)
			}
			if len(names) != 2+len(files) || names[0] != MetadataName || names[1] != DumpName {
				t.Errorf("entries %q, want %s, %s and %d files", names, MetadataName, DumpName, len(files))
			}
			verifyArchive(t, sink.blob, res, sink, dump, files, true)
		})
	}
}

// TestPythonReadsArchiveStreaming: Python's tarfile in streaming mode (r|gz, as a pipe gives it) lists
// every entry with its size and reads its content.
func TestPythonReadsArchiveStreaming(t *testing.T) {
	checkNoLeak(t)
	opts := testOptions()
	dump := makeDump(5*(64<<10)+77, 6)
	files := makeFiles(manyFileSizes()...)
	blob, _, _ := buildArchive(t, opts, dump, files, testMeta)
	want := map[string][]byte{DumpName: dump}
	for _, f := range files {
		want[TreeName(f.uuid)] = f.data
	}
	got := pythonList(t, blob, true)
	if len(got) != len(want)+1 || got[0].name != MetadataName || got[1].name != DumpName {
		t.Fatalf("python tarfile r|gz: %d entries beginning %v, want %d beginning %s, %s", len(got), got[:min(2, len(got))], len(want)+1, MetadataName, DumpName)
	}
	for _, m := range got[1:] {
		data, ok := want[m.name]
		if !ok || int64(len(data)) != m.size || sum(data) != m.sum {
			t.Errorf("python tarfile r|gz: %s of %d bytes (SHA-256 %s): not in the archive or different", m.name, m.size, m.sum)
		}
		delete(want, m.name)
	}
	if len(want) > 0 {
		t.Errorf("python tarfile r|gz: %d entries missing", len(want))
	}
}

func TestCompressionRatio(t *testing.T) {
	// Table-like text as the dump and as files: how far are independently compressed 4 MiB blocks from one stream?
	dump := makeDump(24<<20, 3)
	files := makeFiles(5000, 20000, 3<<20, 100, 8<<20)
	for i := range files {
		fillText(files[i].data, uint64(i+100))
	}
	opts := testOptions()
	opts.ChunkSize = DefaultChunkSize
	blob, _, _ := buildArchive(t, opts, dump, files, testMeta)

	// The same tar bytes, compressed as one stream at the same level.
	zr, err := stdgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tarBytes, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var single bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&single, DefaultLevel)
	_, _ = zw.Write(tarBytes)
	_ = zw.Close()
	ratio := float64(len(blob)) / float64(single.Len())
	t.Logf("archive %d bytes, one stream %d bytes, ratio %.5f", len(blob), single.Len(), ratio)
	if ratio >= 1.01 {
		t.Errorf("archive of independently compressed blocks is %.4f × one gzip stream, want < 1.01", ratio)
	}

	// For the record only (it depends on the data and is the Level option's business): how the archive
	// compares with compress/gzip's default level, which is what `tar czf` and pg_dump -Fc use.
	var std bytes.Buffer
	sw, _ := stdgzip.NewWriterLevel(&std, stdgzip.DefaultCompression)
	_, _ = sw.Write(tarBytes)
	_ = sw.Close()
	t.Logf("compress/gzip default level: %d bytes, archive is %.4f × that", std.Len(), float64(len(blob))/float64(std.Len()))
}

func TestProgress(t *testing.T) {
	checkNoLeak(t)
	var mu sync.Mutex
	var last Progress
	calls := 0
	opts := testOptions()
	opts.Progress = func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if p.DumpBytes > last.DumpBytes {
			last.DumpBytes = p.DumpBytes
		}
		if p.Files > last.Files {
			last.Files, last.FilesBytes = p.Files, p.FilesBytes
		}
	}
	dump := makeDump(5*(64<<10), 4)
	files := makeFiles(10, 20, 30)
	buildArchive(t, opts, dump, files, testMeta)
	want := Progress{DumpBytes: int64(len(dump)), Files: 3, FilesBytes: 60}
	if last != want || calls < 5+3 {
		t.Errorf("last progress %+v after %d calls, want %+v after at least 8", last, calls, want)
	}
}

func TestLargeEntryHeader(t *testing.T) {
	const size = 9 << 30 // needs PAX: USTAR stops at 8 GiB
	hdr, err := tarHeader(DumpName, size, testModTime)
	if err != nil {
		t.Fatal(err)
	}
	// A tar stream of just the header, as Go's reader sees it before the data.
	h, err := tar.NewReader(bufio.NewReader(bytes.NewReader(hdr))).Next()
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	if h.Name != DumpName || h.Size != size || !h.ModTime.Equal(testModTime.Truncate(time.Second)) || h.Mode != 0o644 {
		t.Errorf("got %s size %d mtime %v mode %o, want %s %d %v 644", h.Name, h.Size, h.ModTime, h.Mode, DumpName, int64(size), testModTime)
	}
}

func TestBlockIDsAreEqualLength(t *testing.T) {
	a, b := newBlockID('h', 1), newBlockID('f', 9_999_999_999)
	if len(a.id) != len(b.id) || a.name != "h-0000000001" || b.name != "f-9999999999" {
		t.Errorf("IDs %q (%s) and %q (%s), want equal lengths", a.id, a.name, b.id, b.name)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1: "1 byte", 300: "300 bytes", 9 << 30: "9 GiB", 3 << 19: "1.5 MiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
