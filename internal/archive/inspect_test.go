package archive

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

const (
	uuidA = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	uuidB = "1fbdf930-67f9-47ee-b30e-e84c4c983e85"
)

var (
	testDump     = makeDump(3000, 8)
	testMetaJSON = `{"duration":"0","dumpSize":"3000","modelVersion":"1.0.0.40","databaseSize":"9730584","filesSize":"11"}`
)

// entry is one tar entry for a hand-made archive.
type entry struct {
	hdr  tar.Header
	body []byte
}

func reg(name string, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body)), Mode: 0o644}, body: []byte(body)}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func special(name string, flag byte, link string) entry {
	return entry{hdr: tar.Header{Typeflag: flag, Name: name, Linkname: link, Mode: 0o644}}
}

// validEntries is a small archive that Inspect accepts.
func validEntries() []entry {
	return []entry{
		reg(".metadata", testMetaJSON),
		reg("db/db.backup", string(testDump)),
		reg(TreeName(uuidA), "hello"),
		reg(TreeName(uuidB), "world!"),
	}
}

// tarOf writes entries with archive/tar, end-of-archive marker included.
func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar data %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(data []byte) []byte {
	var buf bytes.Buffer
	zw := stdgzip.NewWriter(&buf)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return buf.Bytes()
}

func tgz(t testing.TB, entries ...entry) []byte { return gz(tarOf(t, entries...)) }

func with(entries ...entry) []entry { return append(validEntries(), entries...) }

// headerOnly is a tar stream of one header that states size, without its data or anything after it.
func headerOnly(t testing.TB, name string, size int64) []byte {
	t.Helper()
	hdr, err := tarHeader(name, size, testModTime)
	if err != nil {
		t.Fatal(err)
	}
	return hdr
}

// gnuTar makes an archive with GNU tar from files (path → content; a nil content makes a 2 MiB sparse
// file).
func gnuTar(t testing.TB, files map[string][]byte, args ...string) []byte {
	t.Helper()
	root, err := os.MkdirTemp("", "archive-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if content == nil {
			f, err := os.Create(p)
			if err == nil {
				_, err = f.WriteAt([]byte("x"), 1<<20)
			}
			if err == nil {
				err = f.Truncate(2 << 20)
			}
			if err == nil {
				err = f.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command("tar", append(append([]string{"-cz", "-f", "-", "-C", root}, args...), ".")...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tar: %v: %s", err, stderr.String())
	}
	return out.Bytes()
}

func validFiles() map[string][]byte {
	return map[string][]byte{".metadata": []byte(testMetaJSON), "db/db.backup": testDump, TreeName(uuidA): []byte("hello")}
}

// inspectCase is one archive and what Inspect must say about it.
type inspectCase struct {
	name    string
	data    []byte
	limits  Limits
	wantErr string // substring of the rejection; empty when accepted
}

// hostileCases are archives Inspect must reject, each with the message a user would see.
func hostileCases(t testing.TB) []inspectCase {
	valid := tgz(t, validEntries()...)
	validTar := tarOf(t, validEntries()...)
	crc := bytes.Clone(valid)
	crc[len(crc)-6] ^= 0xff
	deflate := bytes.Clone(valid)
	for i := 40; i < 60; i++ {
		deflate[i] ^= 0x55
	}
	bomb := make([]byte, 8<<20)
	return []inspectCase{
		{name: "not gzip", data: []byte("PK\x03\x04 this is a zip file, not a tarball"), wantErr: "archive is not gzip-compressed"},
		{name: "empty", data: nil, wantErr: "archive is empty"},
		{name: "gzip of text", data: gz(bytes.Repeat([]byte("just some text\n"), 100)), wantErr: "archive is not a tar archive"},
		{name: "gzip of short text", data: gz([]byte("hello")), wantErr: "archive is not a tar archive"},
		{name: "gzip of nothing", data: gz(nil), wantErr: "archive is not a tar archive: it holds no data"},
		{name: "truncated gzip", data: valid[:len(valid)/2], wantErr: "archive is truncated"},
		{name: "truncated gzip by one byte", data: valid[:len(valid)-1], wantErr: "archive is truncated"},
		{name: "truncated tar in whole gzip", data: gz(validTar[:2000]), wantErr: "archive is truncated"},
		{name: "no end-of-archive marker", data: gz(validTar[:len(validTar)-1024]), wantErr: "archive is truncated: it ends without the tar end-of-archive marker"},
		{name: "gzip checksum", data: crc, wantErr: "archive is corrupt"},
		{name: "corrupt deflate data", data: deflate, wantErr: "archive is corrupt"},
		{name: "trailing garbage", data: append(bytes.Clone(valid), "garbage after the archive"...), wantErr: "not gzip-compressed after a gzip member"},
		{name: "parent path", data: tgz(t, with(reg("../x", "evil"))...), wantErr: `entry "../x" leaves the archive root`},
		{name: "dot parent path", data: tgz(t, with(reg("./../x", "evil"))...), wantErr: `entry "./../x" leaves the archive root`},
		{name: "parent path inside tree", data: tgz(t, with(reg("tree/../../x", "evil"))...), wantErr: `entry "tree/../../x" leaves the archive root`},
		{name: "parent path that stays inside", data: tgz(t, with(reg("tree/../db/db.backup", "evil"))...), wantErr: `contains ".."`},
		{name: "absolute path", data: tgz(t, with(reg("/etc/cron.d/x", "evil"))...), wantErr: `entry "/etc/cron.d/x" has an absolute path`},
		{name: "symbolic link", data: tgz(t, with(special(TreeName(uuidB), tar.TypeSymlink, "/etc/passwd"))...), wantErr: fmt.Sprintf(`entry %q is a symbolic link; links are not allowed`, TreeName(uuidB))},
		{name: "hard link", data: tgz(t, with(special("db/other", tar.TypeLink, "db/db.backup"))...), wantErr: `entry "db/other" is a hard link; links are not allowed`},
		{name: "character device", data: tgz(t, with(special("null", tar.TypeChar, ""))...), wantErr: `entry "null" is a device file`},
		{name: "block device", data: tgz(t, with(special("sda", tar.TypeBlock, ""))...), wantErr: `entry "sda" is a device file`},
		{name: "fifo", data: tgz(t, with(special("pipe", tar.TypeFifo, ""))...), wantErr: `entry "pipe" is a FIFO`},
		{name: "GNU sparse file", data: gnuTar(t, map[string][]byte{"db/db.backup": testDump, "tree/" + uuidA: nil}, "--sparse", "--format=gnu"), wantErr: "is a sparse file"},
		{name: "PAX sparse file", data: gnuTar(t, map[string][]byte{"db/db.backup": testDump, "tree/" + uuidA: nil}, "--sparse", "--format=pax"), wantErr: "is a sparse file"},
		{name: "tree name not a UUID", data: tgz(t, with(reg("tree/xyz", "x"))...), wantErr: `entry "tree/xyz" is not named by a UUID`},
		{name: "tree nesting does not match", data: tgz(t, with(reg("tree/00/00/"+uuidB, "x"))...), wantErr: "is not named by a UUID"},
		{name: "tree nested one level", data: tgz(t, with(reg("tree/1f/"+uuidB, "x"))...), wantErr: "is not named by a UUID"},
		{name: "tree UUID with braces", data: tgz(t, with(reg("tree/{"+uuidB+"}", "x"))...), wantErr: "is not named by a UUID"},
		{name: "no dump", data: tgz(t, reg(".metadata", testMetaJSON), reg(TreeName(uuidA), "x")), wantErr: "archive has no db/db.backup"},
		{name: "files only", data: tgz(t, reg(TreeName(uuidA), "x")), wantErr: "archive has no db/db.backup"},
		{name: "dump in plain SQL", data: tgz(t, reg("db/db.backup", "-- PostgreSQL database dump\nCREATE TABLE x();\n")), wantErr: "db/db.backup is not a PostgreSQL custom-format dump"},
		{name: "dump too short", data: tgz(t, reg("db/db.backup", "PGDMP")), wantErr: "db/db.backup is not a PostgreSQL custom-format dump"},
		{name: "entry over the limit", data: gz(headerOnly(t, "db/db.backup", 9<<30)), limits: Limits{MaxEntryBytes: 8 << 30}, wantErr: `entry "db/db.backup" size 9 GiB exceeds the limit of 8 GiB`},
		{name: "file over the limit", data: tgz(t, reg("db/db.backup", string(testDump)), reg("tree/"+uuidB, strings.Repeat("x", 5000))), limits: Limits{MaxEntryBytes: 4096}, wantErr: `entry "tree/` + uuidB + `" size 4.9 KiB exceeds the limit of 4 KiB`},
		{name: "archive over the limit", data: valid, limits: Limits{MaxArchiveBytes: int64(len(valid)) - 1}, wantErr: "archive exceeds the size limit"},
		{name: "stated sizes over the unpacked limit", data: tgz(t, with(reg("big", string(bomb)))...), limits: Limits{MaxUnpackedBytes: 1 << 20}, wantErr: "archive unpacks to more than the limit of 1 MiB"},
		{name: "zeros after the end over the unpacked limit", data: gz(append(bytes.Clone(validTar), bomb...)), limits: Limits{MaxUnpackedBytes: 1 << 20}, wantErr: "archive unpacks to more than the limit of 1 MiB"},
		{name: "too many entries", data: tgz(t, with(dir("a/"), dir("b/"))...), limits: Limits{MaxEntries: 5}, wantErr: "archive has more than 5 entries"},
		{name: "two dumps", data: tgz(t, with(reg("./db/db.backup", string(testDump)))...), wantErr: "archive has more than one entry for db/db.backup"},
		{name: "file flat and nested", data: tgz(t, with(reg("tree/"+uuidA, "again"))...), wantErr: "archive has more than one entry for tree/" + uuidA},
		{name: "file in two cases", data: tgz(t, with(reg("tree/"+strings.ToUpper(uuidB), "again"))...), wantErr: "archive has more than one entry for tree/" + uuidB},
		{name: "two metadata entries", data: tgz(t, with(reg(".metadata", "{}"))...), wantErr: "archive has more than one entry for .metadata"},
		{name: "multi-member archive cut between members", data: cutBeforeTree(t), wantErr: "archive is truncated"},
		{name: "builder archive without its small files' blocks", data: builtWithout(t, 't'), wantErr: "archive is corrupt: gzip checksum mismatch"},
		{name: "builder archive without its gzip trailer", data: builtWithout(t, 'z'), wantErr: "archive is truncated"},
	}
}

// cutBeforeTree is the first of two gzip members of a valid archive: .metadata and db/db.backup, up to
// the entry boundary where the second member (the files and the end-of-archive marker) would start.
func cutBeforeTree(t testing.TB) []byte {
	full := tarOf(t, validEntries()...)
	head := tarOf(t, validEntries()[:2]...)
	head = head[:len(head)-2*blockSize] // without its end-of-archive marker
	if !bytes.HasPrefix(full, head) {
		t.Fatal("the first two entries are not a prefix of the archive")
	}
	return gz(head)
}

// builtWithout builds an archive with the Builder and drops the committed blocks of one kind (see the
// package comment) from the blob.
func builtWithout(t testing.TB, kind byte) []byte {
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, Options{ChunkSize: 4096, ModTime: testModTime})
	if _, err := b.WriteDatabase(bytes.NewReader(testDump)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile(uuidA, 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Finish(testMeta); err != nil {
		t.Fatal(err)
	}
	var cut []byte
	for _, id := range sink.ids {
		if name := decodeID(id); name[0] != kind {
			cut = append(cut, sink.blocks[id]...)
		}
	}
	return cut
}

func decodeID(id string) string {
	raw, _ := base64.StdEncoding.DecodeString(id)
	return string(raw)
}

func TestInspectRejects(t *testing.T) {
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{r: bytes.NewReader(tc.data)}
			_, err := Inspect(context.Background(), src, tc.limits, nil)
			var be *backup.Error
			if !errors.As(err, &be) || be.Code != backup.CodeInvalidParameters {
				t.Fatalf("got %v, want a *backup.Error with code %s", err, backup.CodeInvalidParameters)
			}
			if !strings.Contains(be.Message, tc.wantErr) {
				t.Errorf("message %q, want it to contain %q", be.Message, tc.wantErr)
			}
			if limit := tc.limits.withDefaults().MaxArchiveBytes; src.count() > limit+1 {
				t.Errorf("read %d bytes, limit %d", src.count(), limit)
			}
		})
	}
}

// TestInspectRejectsWithoutReading: an entry that states a size over the limit is rejected on its header.
func TestInspectRejectsWithoutReading(t *testing.T) {
	data := append(tarOf(t, reg(".metadata", "{}"))[:1024], headerOnly(t, "db/db.backup", 9<<30)...)
	noise := make([]byte, 10<<20) // incompressible data that must not be read
	fillRandom(noise, 1)
	src := &countingReader{r: bytes.NewReader(gz(append(data, noise...)))}
	_, err := Inspect(context.Background(), src, Limits{MaxEntryBytes: 8 << 30}, nil)
	if backup.CodeOf(err) != backup.CodeInvalidParameters || !strings.Contains(err.Error(), "exceeds the limit of 8 GiB") {
		t.Fatalf("got %v, want the entry size rejected", err)
	}
	if src.count() > 256<<10 {
		t.Errorf("read %d bytes of the archive before rejecting, want only about the headers", src.count())
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// count is the bytes read so far; safe while another goroutine reads.
func (c *countingReader) count() int64 { return c.n.Load() }

// TestInspectSaysWhereItBroke: a broken stream is reported with the byte where it broke and the entry
// it was in, so that a user can tell a cut upload from a damaged one.
func TestInspectSaysWhereItBroke(t *testing.T) {
	full := tarOf(t, validEntries()...)
	head := tarOf(t, validEntries()[:2]...)
	third := int64(len(head) - 2*blockSize) // where the third entry's header starts
	cutInDump := gz(full[:blockSize*3+100])
	badHeader := bytes.Clone(full)
	badHeader[third] ^= 0x20 // a name byte: the header's checksum no longer matches
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"cut inside an entry", cutInDump, fmt.Sprintf("archive is truncated at byte %d (inside entry %q)", len(cutInDump), "db/db.backup")},
		{"cut between entries", gz(full[:third+blockSize/2]), `(after entry "db/db.backup")`},
		{"bad header checksum", gz(badHeader), fmt.Sprintf("invalid tar header at byte %d of the unpacked archive, after entry %q", third, "db/db.backup")},
		{"no end marker", gz(full[:len(full)-2*blockSize]), fmt.Sprintf("after entry %q (byte %d of the unpacked archive)", TreeName(uuidB), len(full)-2*blockSize)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(context.Background(), bytes.NewReader(tc.data), Limits{}, nil)
			var be *backup.Error
			if !errors.As(err, &be) || be.Code != backup.CodeInvalidParameters {
				t.Fatalf("got %v, want a *backup.Error with code %s", err, backup.CodeInvalidParameters)
			}
			if !strings.Contains(be.Message, tc.want) {
				t.Errorf("message %q, want it to contain %q", be.Message, tc.want)
			}
		})
	}
}

// TestCheckArchiveSize: a blob whose size is over the limit is refused before it is read.
func TestCheckArchiveSize(t *testing.T) {
	l := Limits{MaxArchiveBytes: 1 << 20}
	if err := l.CheckArchiveSize(1 << 20); err != nil {
		t.Errorf("an archive of exactly the limit: %v", err)
	}
	err := l.CheckArchiveSize(3 << 20)
	if backup.CodeOf(err) != backup.CodeInvalidParameters || !strings.Contains(err.Error(), "archive exceeds the size limit of 1 MiB: it has 3 MiB") {
		t.Errorf("got %v, want the size refused", err)
	}
	err = (Limits{MaxArchiveBytes: 110_000}).CheckArchiveSize(110_001)
	if err == nil || !strings.Contains(err.Error(), "limit of 110000 bytes: it has 110001 bytes") {
		t.Errorf("got %v, want sizes that round alike in bytes", err)
	}
	if err := (Limits{}).CheckArchiveSize(DefaultLimits.MaxArchiveBytes + 1); err == nil {
		t.Error("the default limit applies to a zero Limits")
	}
}
