package archive

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	stdgzip "compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var errStage = errors.New("stage block: injected failure")

// memSink is an in-memory BlockSink: it keeps staged blocks by ID and assembles the blob on Commit.
type memSink struct {
	mu        sync.Mutex
	blocks    map[string][]byte
	staged    int
	failOn    int // StageBlock call number (1-based) that fails; 0 for none
	commits   int
	commitErr error // returned by Commit when set
	ids       []string
	blob      []byte
	badIDs    []string
	badMD5    []string // blocks staged with a Content-MD5 that is not their data's
}

func newMemSink() *memSink { return &memSink{blocks: map[string][]byte{}} }

var blockNameRE = regexp.MustCompile(`^[hdftz]-[0-9]{10}$`)

func (s *memSink) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staged++
	if s.failOn != 0 && s.staged == s.failOn {
		return errStage
	}
	if md5.Sum(data) != contentMD5 { // what Azure refuses with Md5Mismatch
		s.badMD5 = append(s.badMD5, id)
	}
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil || !blockNameRE.Match(raw) {
		s.badIDs = append(s.badIDs, id)
	}
	s.blocks[id] = bytes.Clone(data)
	return nil
}

func (s *memSink) Commit(ctx context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	if s.commitErr != nil {
		return s.commitErr
	}
	var blob bytes.Buffer
	for _, id := range ids {
		data, ok := s.blocks[id]
		if !ok {
			return fmt.Errorf("commit: block %s was not staged", id)
		}
		blob.Write(data)
	}
	s.ids = slices.Clone(ids)
	s.blob = blob.Bytes()
	return nil
}

func (s *memSink) commitCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// discardSink stages nothing and keeps nothing; for the memory test.
type discardSink struct{}

func (d *discardSink) StageBlock(context.Context, string, []byte, [md5.Size]byte) error { return nil }
func (d *discardSink) Commit(context.Context, []string) error                           { return nil }

// testFile is a file document to put into an archive.
type testFile struct {
	uuid string
	data []byte
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

func uuidFor(rng *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// makeDump returns n bytes that start like a custom-format dump of archive version 1.14.0 when n >= 8.
func makeDump(n int, seed uint64) []byte {
	d := make([]byte, n)
	fillText(d, seed)
	copy(d, "PGDMP\x01\x0e\x00")
	return d
}

var words = strings.Fields(`select insert update mendix system filedocument name size hascontents true false
	invoice customer order product amount status pending shipped delivered account user admin
	2024-01-05 2025-11-30 12:00:00 amsterdam rotterdam utrecht eindhoven  description comment value`)

// fillText fills d with text that compresses like table data: words, numbers, UUIDs.
func fillText(d []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var line []byte
	for i := 0; i < len(d); {
		line = line[:0]
		line = strconv.AppendInt(line, int64(rng.IntN(10_000_000)), 10)
		line = append(line, '\t')
		line = append(line, uuidFor(rng)...)
		for w := rng.IntN(8) + 2; w > 0; w-- {
			line = append(line, '\t')
			line = append(line, words[rng.IntN(len(words))]...)
		}
		line = append(line, '\t')
		line = strconv.AppendFloat(line, rng.Float64()*1000, 'f', 2, 64)
		line = append(line, '\n')
		i += copy(d[i:], line)
	}
}

func fillRandom(d []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	for i := 0; i+8 <= len(d); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			d[i+j] = byte(v >> (8 * j))
		}
	}
}

// buildArchive writes dump and files with a Builder over a memSink, adding the files from several
// goroutines at once, and returns the assembled blob.
func buildArchive(t *testing.T, opts Options, dump []byte, files []testFile, meta Metadata) ([]byte, Result, *memSink) {
	t.Helper()
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, opts)
	var wg sync.WaitGroup
	wg.Add(1)
	var dumpErr error
	go func() {
		defer wg.Done()
		n, err := b.WriteDatabase(bytes.NewReader(dump))
		if err == nil && n != int64(len(dump)) {
			err = fmt.Errorf("WriteDatabase wrote %d bytes, want %d", n, len(dump))
		}
		dumpErr = err
	}()
	work := make(chan testFile)
	errs := make(chan error, len(files))
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				errs <- b.AddFile(f.uuid, int64(len(f.data)), iotestHalfReader(f.data))
			}
		}()
	}
	for _, f := range files {
		work <- f
	}
	close(work)
	wg.Wait()
	close(errs)
	if dumpErr != nil {
		b.Abort()
		t.Fatalf("WriteDatabase: %v", dumpErr)
	}
	for err := range errs {
		if err != nil {
			b.Abort()
			t.Fatalf("AddFile: %v", err)
		}
	}
	res, err := b.Finish(meta)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	checkCommitted(t, sink, res.Size, res.Blocks)
	return sink.blob, res, sink
}

// checkCommitted checks a blob committed to sink: well-formed block IDs and Content-MD5s, and a blob
// that VerifyBlob accepts against blocks, with its true size and SHA-256 and size bytes.
func checkCommitted(t *testing.T, sink *memSink, size int64, blocks []Block) {
	t.Helper()
	if len(sink.badIDs) > 0 {
		t.Errorf("block IDs not of the form base64(\"x-0000000000\"): %q", sink.badIDs)
	}
	if len(sink.badMD5) > 0 {
		t.Errorf("blocks staged with a wrong Content-MD5: %q", sink.badMD5)
	}
	v, err := VerifyBlob(context.Background(), bytes.NewReader(sink.blob), blocks)
	if err != nil {
		t.Errorf("VerifyBlob of the committed blob: %v", err)
	}
	if sum := sha256.Sum256(sink.blob); v.SHA256 != hex.EncodeToString(sum[:]) || v.Size != int64(len(sink.blob)) || size != v.Size {
		t.Errorf("VerifyBlob: got %d bytes, SHA-256 %s; result size %d; the blob has %d bytes, SHA-256 %x",
			v.Size, v.SHA256, size, len(sink.blob), sum)
	}
}

// iotestHalfReader reads data in small uneven pieces, like a network body does.
func iotestHalfReader(data []byte) io.Reader {
	return &choppyReader{data: data}
}

type choppyReader struct {
	data []byte
	n    int
}

func (c *choppyReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.n++
	limit := 1 + (c.n*7919)%65536
	if len(p) > limit {
		p = p[:limit]
	}
	k := copy(p, c.data)
	c.data = c.data[k:]
	return k, nil
}

// member is one entry as read back.
type member struct {
	name string
	size int64
	sum  string // hex SHA-256 of the content
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// readWithGo reads an archive with the standard library (multistream gzip + archive/tar).
func readWithGo(t *testing.T, blob []byte) (map[string][]byte, []string) {
	t.Helper()
	zr, err := stdgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("compress/gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	contents := map[string][]byte{}
	var order []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("archive/tar: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: type %q mode %o uid %d gid %d, want regular 0644 0 0", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("archive/tar: read %s: %v", hdr.Name, err)
		}
		contents[hdr.Name] = data
		order = append(order, hdr.Name)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Fatalf("compress/gzip after the tar: %v", err)
	}
	return contents, order
}

// gnuList lists an archive with GNU tar -tzvf and returns names and sizes.
func gnuList(t *testing.T, blob []byte) []member {
	t.Helper()
	out := runTool(t, blob, "tar", "-tzvf", "-")
	var ms []member
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line) // -rw-r--r-- 0/0 12 2024-01-02 03:04 name
		if len(f) != 6 {
			t.Fatalf("tar -tzvf: unexpected line %q", line)
		}
		if f[0] != "-rw-r--r--" || f[1] != "0/0" {
			t.Errorf("tar -tzvf: %s: mode %s owner %s, want -rw-r--r-- 0/0", f[5], f[0], f[1])
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("tar -tzvf: size in %q: %v", line, err)
		}
		ms = append(ms, member{name: f[5], size: size})
	}
	return ms
}

// gnuExtract extracts an archive with GNU tar -xzf into a new directory and returns the directory.
func gnuExtract(t *testing.T, blob []byte) string {
	t.Helper()
	dir := t.TempDir()
	runTool(t, blob, "tar", "-xzf", "-", "-C", dir)
	return dir
}

// pythonList reads an archive with Python's tarfile and returns every member with the SHA-256 of its
// content: from a file (mode "r:gz"), or when streaming from a pipe (mode "r|gz", which reads one gzip
// member only and fails on a multi-member archive with "unexpected end of data").
func pythonList(t *testing.T, blob []byte, streaming bool) []member {
	t.Helper()
	const script = `
import hashlib, sys, tarfile
if sys.argv[1] == "stream":
    tf = tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz")
else:
    tf = tarfile.open(sys.argv[1], mode="r:gz")
with tf:
    for m in tf:
        if not m.isreg():
            sys.exit("not a regular file: " + m.name)
        h = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
        print(m.name, m.size, h, sep="\t")
`
	var out string
	if streaming {
		out = runTool(t, blob, "python3", "-c", script, "stream")
	} else {
		path := filepath.Join(t.TempDir(), "a.tar.gz")
		if err := os.WriteFile(path, blob, 0o600); err != nil {
			t.Fatal(err)
		}
		out = runTool(t, nil, "python3", "-c", script, path)
	}
	var ms []member
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || len(f) != 3 {
			t.Fatalf("python tarfile: unexpected line %q", line)
		}
		ms = append(ms, member{name: f[0], size: size, sum: f[2]})
	}
	return ms
}

// gzipHeaderLen is the size of a gzip header without optional fields.
const gzipHeaderLen = 10

// checkOneMember checks that blob is exactly one gzip member (RFC 1952): a header, one deflate stream
// read with a raw inflater (which stops at the block marked final), the CRC-32 and length of what it
// inflated, and nothing after. It returns the inflated bytes.
func checkOneMember(t *testing.T, blob []byte) []byte {
	t.Helper()
	if len(blob) < gzipHeaderLen || blob[0] != 0x1f || blob[1] != 0x8b || blob[2] != 8 {
		t.Fatalf("not a gzip header: % x", blob[:min(len(blob), gzipHeaderLen)])
	}
	if blob[3] != 0 {
		t.Fatalf("gzip header flags %#x, want none", blob[3])
	}
	r := bytes.NewReader(blob[gzipHeaderLen:]) // an io.ByteReader: the inflater reads no further than it needs
	data, err := io.ReadAll(flate.NewReader(r))
	if err != nil {
		t.Fatalf("raw inflate after the gzip header: %v", err)
	}
	rest := blob[len(blob)-r.Len():]
	if len(rest) < 8 {
		t.Fatalf("the deflate stream ends %d bytes before the end of the file, want an 8-byte trailer", len(rest))
	}
	crc, isize := binary.LittleEndian.Uint32(rest[0:4]), binary.LittleEndian.Uint32(rest[4:8])
	if want := crc32.ChecksumIEEE(data); crc != want || isize != uint32(len(data)) {
		t.Errorf("gzip trailer: CRC-32 %08x ISIZE %d, want %08x %d (the %d bytes inflated)", crc, isize, want, uint32(len(data)), len(data))
	}
	if len(rest) > 8 {
		t.Errorf("%d bytes follow the first gzip member (inflated to %d bytes): the file is more than one member", len(rest)-8, len(data))
	}
	return data
}

func runTool(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	line := name
	for _, a := range args {
		if len(a) > 40 { // a script
			a = "'" + a[:20] + "…'"
		}
		line += " " + a
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr: %s", line, stderr.String())
	}
	return stdout.String()
}

// checkNoLeak fails the test if goroutines started during it are still running at its end.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d after the test, %d before\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
