package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mxazure/backups/internal/backup"
)

const streamPath = ".downloads/ns1/env/snap/arch/attempt-01.backup"

// smallBlocks makes WriteStream cut streams into blocks of size bytes, at most limit of them, for the
// test.
func smallBlocks(t *testing.T, size, limit int) {
	oldSize, oldLimit := streamBlockSize, maxBlocks
	streamBlockSize, maxBlocks = size, limit
	t.Cleanup(func() { streamBlockSize, maxBlocks = oldSize, oldLimit })
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// wantNoBlob fails unless nothing is committed at path of the snapshots container.
func wantNoBlob(t *testing.T, s *Store, path string) {
	t.Helper()
	_, err := s.Client().ServiceClient().NewContainerClient(s.SnapshotsContainer()).NewBlobClient(path).GetProperties(t.Context(), nil)
	if !blobMissing(err) {
		t.Errorf("a blob at %s: %v", path, err)
	}
}

// TestWriteStreamCommitsItsBlocksInOrder: a stream read in small pieces becomes a blob of blocks of
// the block size in order, the last one shorter, served with the headers asked for; the result is its
// size and SHA-256. An empty stream is an empty blob. (Azure keeps the committed block list as sent;
// so does Azurite.)
func TestWriteStreamCommitsItsBlocksInOrder(t *testing.T) {
	smallBlocks(t, 1000, maxBlocks)
	s := newStore(t)
	ctx := t.Context()
	data := pattern(4321)
	h := StreamHeaders{ContentType: "application/octet-stream", ContentDisposition: `attachment; filename="db.backup"`}
	res, err := s.WriteStream(ctx, streamPath, iotest.HalfReader(bytes.NewReader(data)), h)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != 4321 || res.SHA256 != hexSHA256(data) {
		t.Errorf("got %+v, want 4321 bytes of SHA-256 %s", res, hexSHA256(data))
	}
	r, err := s.OpenRange(ctx, streamPath, 0, 4321)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the blob is %d bytes unlike the stream's, %v", len(got), err)
	}
	bb := s.Client().ServiceClient().NewContainerClient(s.SnapshotsContainer()).NewBlockBlobClient(streamPath)
	props, err := bb.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *props.ContentType != h.ContentType || *props.ContentDisposition != h.ContentDisposition {
		t.Errorf("served as %q, %q", *props.ContentType, *props.ContentDisposition)
	}
	list, err := bb.GetBlockList(ctx, blockblob.BlockListTypeAll, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for _, b := range list.CommittedBlocks {
		sizes = append(sizes, *b.Size)
	}
	if want := []int64{1000, 1000, 1000, 1000, 321}; !slices.Equal(sizes, want) {
		t.Errorf("committed blocks of %v, want %v", sizes, want)
	}

	empty := streamPath + ".empty"
	if res, err := s.WriteStream(ctx, empty, bytes.NewReader(nil), h); err != nil || res.Size != 0 || res.SHA256 != hexSHA256(nil) {
		t.Errorf("an empty stream: %+v, %v", res, err)
	}
	if size, err := s.BlobSize(ctx, empty); err != nil || size != 0 {
		t.Errorf("an empty stream's blob: %d, %v", size, err)
	}
}

// TestWriteStreamCommitsNothingOnError: a stream that fails half-way (a block staged, a block being
// filled), or outgrows the most blocks a
// blob can have (Azure's 50,000, fewer here), leaves no blob.
func TestWriteStreamCommitsNothingOnError(t *testing.T) {
	smallBlocks(t, 1000, 3)
	s := newStore(t)
	ctx := t.Context()
	// io.ErrUnexpectedEOF is how a truncated gzip stream ends: an error, not the end of the stream.
	for _, broken := range []error{errors.New("gunzip: the stream is damaged"), io.ErrUnexpectedEOF} {
		_, err := s.WriteStream(ctx, streamPath, io.MultiReader(bytes.NewReader(pattern(2500)), iotest.ErrReader(broken)), StreamHeaders{})
		if !errors.Is(err, broken) {
			t.Errorf("got %v, want the stream's error %v", err, broken)
		}
		wantNoBlob(t, s, streamPath)
	}

	_, err := s.WriteStream(ctx, streamPath, bytes.NewReader(pattern(3001)), StreamHeaders{})
	if backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("more than 3 blocks: got %v, want refused", err)
	}
	wantNoBlob(t, s, streamPath)
	if res, err := s.WriteStream(ctx, streamPath, bytes.NewReader(pattern(3000)), StreamHeaders{}); err != nil || res.Size != 3000 {
		t.Errorf("3 blocks, after the failures: %+v, %v", res, err)
	}
}

// refuseThirdBlock sends requests with the default client but answers the third Put Block itself,
// with Azure's refusal of a role the identity lacks.
type refuseThirdBlock struct{ blocks atomic.Int64 }

func (f *refuseThirdBlock) Do(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("comp") == "block" && f.blocks.Add(1) == 3 {
		h := http.Header{"X-Ms-Error-Code": {"AuthorizationPermissionMismatch"}}
		return &http.Response{StatusCode: 403, Header: h, Body: io.NopCloser(bytes.NewReader(nil)), Request: r}, nil
	}
	return http.DefaultClient.Do(r)
}

// TestWriteStreamCommitsNothingWhenABlockFailsOrCtxEnds: a block Storage refuses fails the write,
// classified (here permanent), and so does a context cancelled half-way; neither leaves a blob.
func TestWriteStreamCommitsNothingWhenABlockFailsOrCtxEnds(t *testing.T) {
	smallBlocks(t, 1000, maxBlocks)
	s := newStoreWith(t, Options{Transport: &refuseThirdBlock{}})
	_, err := s.WriteStream(t.Context(), streamPath, bytes.NewReader(pattern(10_000)), StreamHeaders{})
	if backup.CodeOf(err) != backup.CodeInvalidState {
		t.Errorf("a block refused: got %v, want the refusal", err)
	}
	wantNoBlob(t, s, streamPath)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &writeWhenHalfRead{r: bytes.NewReader(pattern(2500)), write: cancel}
	if _, err := s.WriteStream(ctx, streamPath, r, StreamHeaders{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
	wantNoBlob(t, s, streamPath)
}

// writeWhenHalfRead is a stream of 2500 bytes that calls write once 1500 of them are read (another
// writer puts a blob at the path it is written to, or the context ends).
type writeWhenHalfRead struct {
	r     io.Reader
	n     int
	write func()
}

func (w *writeWhenHalfRead) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if w.n < 1500 && w.n+n >= 1500 {
		w.write()
	}
	w.n += n
	return n, err
}

// TestWriteStreamNeverOverwrites: a blob at the path, there before or written meanwhile, stays as it
// is, and the write is a conflict (Azure refuses Put Block List with If-None-Match: * on an existing
// blob, 409 BlobAlreadyExists; so does Azurite).
func TestWriteStreamNeverOverwrites(t *testing.T) {
	smallBlocks(t, 1000, maxBlocks)
	s := newStore(t)
	ctx := t.Context()
	before := []byte("written before")
	if _, err := s.Client().UploadBuffer(ctx, s.SnapshotsContainer(), streamPath, before, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteStream(ctx, streamPath, bytes.NewReader(pattern(2500)), StreamHeaders{}); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("over a blob: got %v, want a conflict", err)
	}
	wantBlob(t, s, streamPath, before)

	other := streamPath + ".2"
	meanwhile := []byte("written meanwhile")
	r := &writeWhenHalfRead{r: bytes.NewReader(pattern(2500)), write: func() {
		if _, err := s.Client().UploadBuffer(ctx, s.SnapshotsContainer(), other, meanwhile, nil); err != nil {
			t.Error(err)
		}
	}}
	if _, err := s.WriteStream(ctx, other, r, StreamHeaders{}); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("a blob written meanwhile: got %v, want a conflict", err)
	}
	wantBlob(t, s, other, meanwhile)
}

func wantBlob(t *testing.T, s *Store, path string, data []byte) {
	t.Helper()
	r, err := s.OpenRange(t.Context(), path, 0, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, data) {
		t.Errorf("%s is %q, %v; want %q", path, got, err, data)
	}
}

// stagingGauge sends requests with the default client, each Put Block held a little, and records the
// most Put Block requests in flight at once.
type stagingGauge struct{ now, most atomic.Int64 }

func (g *stagingGauge) Do(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("comp") != "block" {
		return http.DefaultClient.Do(r)
	}
	n := g.now.Add(1)
	defer g.now.Add(-1)
	for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
	}
	time.Sleep(20 * time.Millisecond)
	return http.DefaultClient.Do(r)
}

// TestWriteStreamStagesAFewBlocksAtOnce: memory is bounded: at most streamInFlight blocks are staged
// at once, and they are staged in parallel.
func TestWriteStreamStagesAFewBlocksAtOnce(t *testing.T) {
	smallBlocks(t, 1000, maxBlocks)
	g := &stagingGauge{}
	s := newStoreWith(t, Options{Transport: g})
	data := pattern(20_000)
	if res, err := s.WriteStream(t.Context(), streamPath, bytes.NewReader(data), StreamHeaders{}); err != nil || res.SHA256 != hexSHA256(data) {
		t.Fatalf("got %+v, %v", res, err)
	}
	if most := g.most.Load(); most < 2 || most > streamInFlight {
		t.Errorf("at most %d blocks staged at once, want 2 to %d", most, streamInFlight)
	}
}
