package archive

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// BlockSink receives the blocks of one archive blob. The blob adapter implements it with Azure Stage
// Block and Put Block List; tests use an in-memory fake.
type BlockSink interface {
	// StageBlock uploads one block under id. data is not retained after it returns. contentMD5 is the
	// MD5 of data, for the store to check the upload (Azure's transactional Content-MD5). Safe for
	// concurrent use; blocks arrive in no particular order. IDs are base64 strings of equal length.
	StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error
	// Commit makes the blob consist of exactly these staged blocks in this order. Called at most once,
	// after every StageBlock call has returned successfully.
	Commit(ctx context.Context, ids []string) error
}

// Defaults and limits of Options.
const (
	DefaultChunkSize = 4 << 20 // uncompressed bytes per block
	DefaultLevel     = 6       // see the package comment for the choice
	DefaultUploads   = 4       // concurrent StageBlock calls
	MinChunkSize     = 512
	MaxChunkSize     = 256 << 20
	// MaxBlocks is the number of committed blocks an Azure block blob can hold.
	MaxBlocks = 50000
)

// Options tune a Builder. The zero value gives the defaults.
type Options struct {
	// ChunkSize is the number of uncompressed tar bytes per block (deflated on its own). Default
	// DefaultChunkSize; MinChunkSize to MaxChunkSize. Raise it for archives of more than about
	// 50,000 × ChunkSize bytes.
	ChunkSize int
	// Concurrency is the number of goroutines compressing. Default runtime.GOMAXPROCS(0).
	Concurrency int
	// Uploads is the number of goroutines calling StageBlock. Default DefaultUploads.
	Uploads int
	// Level is the gzip level, 1 (fastest) to 9 (smallest). Default DefaultLevel.
	Level int
	// ModTime is the modification time of every entry, truncated to seconds. Default: now.
	ModTime time.Time
	// Progress, if set, is called after each chunk of dump read and after each file added, from the
	// goroutine that did the work. It must be fast and safe for concurrent use; throttle writes in it.
	Progress func(Progress)
}

// Progress is a snapshot of the work done so far.
type Progress struct {
	DumpBytes  int64 // bytes of the dump read (while a dump is spliced: in proportion to its compressed bytes)
	Files      int   // files added
	FilesBytes int64 // bytes of the files added
}

// Result describes a committed archive.
type Result struct {
	Size      int64   // bytes of the archive blob (compressed)
	DumpSize  int64   // bytes of db/db.backup
	FilesSize int64   // bytes under tree/
	Files     int     // entries under tree/
	Blocks    []Block // the committed blocks, in blob order: what VerifyBlob checks the blob against
}

// Block is one committed block of the archive blob.
type Block struct {
	ID   string
	Size int64
	MD5  [md5.Size]byte
}

// ErrAborted is the error of a build stopped by Abort.
var ErrAborted = errors.New("archive build aborted")

type state int

const (
	stateOpen      state = iota // accepting WriteDatabase and AddFile
	stateFinishing              // Finish is running
	stateDone                   // finished, failed in Finish, or aborted
)

// Builder writes one archive in one streaming pass (see the package comment). WriteDatabase (or
// WriteCompressedDatabase) and AddFile may run concurrently with each other and AddFile with itself;
// Finish comes after all of them returned.
// Any failure of the build (the sink, the dump reader, ctx, a misuse) stops every goroutine promptly,
// makes later calls return that error and ensures Commit is never called.
type Builder struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	sink      BlockSink
	opts      Options
	start     time.Time
	maxBlocks int64
	smallMax  int64 // files up to this size are read fully before they enter the tar stream

	ins         *pool[[]byte]
	outs        *pool[*outBuf]
	jobs        chan job
	blocks      chan block
	compressors sync.WaitGroup
	stagers     sync.WaitGroup

	seq        atomic.Int64 // block IDs handed out
	dropped    atomic.Int64 // IDs of abandoned streams, never committed
	dumpBytes  atomic.Int64
	files      atomic.Int64
	filesBytes atomic.Int64
	committed  atomic.Bool

	mu         sync.Mutex // guards the fields below
	state      state
	active     int // calls in progress that write: WriteDatabase, WriteCompressedDatabase, AddFile, DumpWriter's
	dumpCalled bool
	dumpDone   bool
	dumpSize   int64
	large      []*stream  // complete large-file streams, in completion order
	uuids      [][16]byte // every file added, to refuse duplicates at Finish

	dump   *stream
	treeMu sync.Mutex // serialises whole entries into tree
	tree   *stream

	stagedMu sync.Mutex
	staged   map[string]Block  // every block staged, by ID
	sums     map[string]rawSum // every block compressed, by ID
}

// NewBuilder starts the compressing and staging goroutines of a new archive. ctx bounds the whole
// build: cancelling it fails the build. Invalid options fail the build at once; the error is returned
// by every later call. Call Finish or Abort exactly once to release the goroutines.
func NewBuilder(ctx context.Context, sink BlockSink, opts Options) *Builder {
	b := &Builder{sink: sink, start: time.Now(), maxBlocks: MaxBlocks, staged: map[string]Block{}, sums: map[string]rawSum{}}
	b.ctx, b.cancel = context.WithCancelCause(ctx)
	b.dump = b.newStream('d')
	b.tree = b.newStream('t')
	opts, err := opts.withDefaults()
	if err == nil && sink == nil {
		err = errors.New("archive builder: nil BlockSink")
	}
	b.opts = opts
	b.smallMax = int64(opts.ChunkSize / 4)
	chunk := opts.ChunkSize
	b.ins = newPool(opts.Concurrency+2, func() []byte { return make([]byte, 0, chunk) })
	b.outs = newPool(opts.Concurrency+opts.Uploads, func() *outBuf {
		return &outBuf{b: make([]byte, 0, compressBound(chunk))}
	})
	b.jobs = make(chan job, opts.Concurrency+2)
	b.blocks = make(chan block, opts.Concurrency+opts.Uploads)
	if err != nil {
		b.fail(err)
		return b
	}
	for range opts.Concurrency {
		b.compressors.Add(1)
		go b.compressor()
	}
	for range opts.Uploads {
		b.stagers.Add(1)
		go b.stager()
	}
	return b
}

func (o Options) withDefaults() (Options, error) {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Concurrency == 0 {
		o.Concurrency = runtime.GOMAXPROCS(0)
	}
	if o.Uploads == 0 {
		o.Uploads = DefaultUploads
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.ModTime.IsZero() {
		o.ModTime = time.Now()
	}
	o.ModTime = o.ModTime.Truncate(time.Second)
	switch {
	case o.ChunkSize < MinChunkSize || o.ChunkSize > MaxChunkSize:
		return o, fmt.Errorf("archive options: ChunkSize %d is outside %d to %d", o.ChunkSize, MinChunkSize, MaxChunkSize)
	case o.Concurrency < 0:
		return o, fmt.Errorf("archive options: negative Concurrency %d", o.Concurrency)
	case o.Uploads < 0:
		return o, fmt.Errorf("archive options: negative Uploads %d", o.Uploads)
	case o.Level < 1 || o.Level > 9:
		return o, fmt.Errorf("archive options: Level %d is outside 1 to 9", o.Level)
	}
	return o, nil
}

// WriteDatabase copies the dump from r into db/db.backup until r's EOF and returns its size. Call it
// once; it may run concurrently with AddFile. Any error fails the whole build. A reader that blocks
// (pg_dump's stdout) should end when the build's context ends, for example with exec.CommandContext.
func (b *Builder) WriteDatabase(r io.Reader) (int64, error) {
	if err := b.enter(b.claimDump); err != nil {
		return 0, err
	}
	defer b.leave()
	n, err := b.dump.readFrom(r, func(total int64) {
		b.dumpBytes.Store(total)
		b.report()
	})
	if err == nil {
		_, err = b.dump.Write(zeroBlocks[:padding(n)])
	}
	if err == nil {
		err = b.dump.submit()
	}
	if err != nil {
		if errors.As(err, new(readError)) {
			err = fmt.Errorf("read database dump: %w", err)
		}
		b.fail(err)
		return n, err
	}
	b.mu.Lock()
	b.dumpDone, b.dumpSize = true, n
	b.mu.Unlock()
	b.dumpBytes.Store(n)
	b.report()
	return n, nil
}

// AddFile adds the file document uuid as tree/<u[0:2]>/<u[2:4]>/<u>; r must give exactly size bytes.
// Safe for concurrent use; each entry is written whole. Files up to ChunkSize/4 bytes are read fully
// before they enter the tar stream; larger ones stream into a run of blocks of their own. Either way, a
// reader that fails or gives more or fewer than size bytes leaves the file out of the archive, AddFile
// returns the error and the build goes on. Errors of the build itself (see Err) are returned too.
// Adding the same UUID twice fails Finish.
func (b *Builder) AddFile(uuid string, size int64, r io.Reader) error {
	u, ok := backup.CanonicalUUID(uuid)
	if !ok {
		return fmt.Errorf("add file %q: not a UUID", uuid)
	}
	if size < 0 {
		return fmt.Errorf("add file %s: negative size %d", u, size)
	}
	if err := b.enter(nil); err != nil {
		return err
	}
	defer b.leave()
	var err error
	if size <= b.smallMax {
		err = b.addSmall(u, size, r)
	} else {
		err = b.addLarge(u, size, r)
	}
	if err != nil {
		if cause := b.Err(); cause != nil {
			return cause
		}
		return fmt.Errorf("add file %s: %w", u, err)
	}
	var key [16]byte
	_, _ = hex.Decode(key[:], []byte(strings.ReplaceAll(u, "-", "")))
	b.mu.Lock()
	b.uuids = append(b.uuids, key)
	b.mu.Unlock()
	b.files.Add(1)
	b.filesBytes.Add(size)
	b.report()
	return nil
}

// smallBufs holds the buffers small files are read into, so that copying thousands of files does not
// churn the heap. Each is at most ChunkSize/4 bytes.
var smallBufs sync.Pool

func (b *Builder) addSmall(u string, size int64, r io.Reader) error {
	var data []byte
	if p, ok := smallBufs.Get().(*[]byte); ok && int64(cap(*p)) >= size {
		data = (*p)[:size]
	} else {
		data = make([]byte, size, roundPow2(size))
	}
	defer func() { smallBufs.Put(&data) }()
	if n, err := io.ReadFull(r, data); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("short read: got %d of %d bytes", n, size)
		}
		return err
	}
	if err := expectEOF(r, size); err != nil {
		return err
	}
	hdr, err := tarHeader(TreeName(u), size, b.opts.ModTime)
	if err != nil {
		return err
	}
	b.treeMu.Lock()
	defer b.treeMu.Unlock()
	for _, p := range [][]byte{hdr, data, zeroBlocks[:padding(size)]} {
		if _, err := b.tree.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// roundPow2 rounds n up to a power of two, at least 4 KiB.
func roundPow2(n int64) int64 {
	if n <= 4096 {
		return 4096
	}
	return 1 << bits.Len64(uint64(n-1))
}

func (b *Builder) addLarge(u string, size int64, r io.Reader) error {
	s := b.newStream('f')
	done := false
	defer func() {
		if !done { // abandon: the blocks already staged are never committed
			s.discard()
			b.dropped.Add(int64(len(s.ids)))
		}
	}()
	hdr, err := tarHeader(TreeName(u), size, b.opts.ModTime)
	if err != nil {
		return err
	}
	if _, err := s.Write(hdr); err != nil {
		return err
	}
	n, err := s.readFrom(io.LimitReader(r, size), nil)
	if err != nil {
		return err
	}
	if n < size {
		return fmt.Errorf("short read: got %d of %d bytes", n, size)
	}
	if err := expectEOF(r, size); err != nil {
		return err
	}
	if _, err := s.Write(zeroBlocks[:padding(size)]); err != nil {
		return err
	}
	if err := s.submit(); err != nil {
		return err
	}
	b.mu.Lock()
	b.large = append(b.large, s)
	b.mu.Unlock()
	done = true
	return nil
}

// expectEOF checks that r, having given size bytes, has nothing more.
func expectEOF(r io.Reader, size int64) error {
	var one [1]byte
	for range 100 {
		n, err := r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("reader has more than the stated %d bytes", size)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// Finish stages the head and the end of the archive, waits for every block to be staged and commits the
// blob. meta's DumpSize and FilesSize are set by the builder; an empty Duration becomes the seconds since
// NewBuilder. Call it once, after WriteDatabase (or WriteCompressedDatabase) and every AddFile returned.
// On error nothing is committed; the blocks already staged are dropped by Azure after a week.
func (b *Builder) Finish(meta Metadata) (Result, error) {
	var res Result
	err := b.finishOnce("WriteDatabase, WriteCompressedDatabase or AddFile", func() (err error) {
		res, err = b.finish(meta)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// finishOnce runs finish as the one Finish of the build: it refuses a second call and a call while a
// write (named by writes) is running, and on error fails the build and returns its cause once every
// goroutine has ended.
func (b *Builder) finishOnce(writes string, finish func() error) error {
	b.mu.Lock()
	switch {
	case b.state != stateOpen:
		b.mu.Unlock()
		if err := b.Err(); err != nil {
			return err
		}
		return errors.New("finish: called twice")
	case b.active > 0:
		b.fail(fmt.Errorf("finish: called while %s is running", writes))
	}
	b.state = stateFinishing
	b.mu.Unlock()

	err := finish()
	if err != nil {
		b.fail(err)
		b.wait()
		err = context.Cause(b.ctx)
	}
	b.mu.Lock()
	b.state = stateDone
	b.mu.Unlock()
	b.cancel(nil) // releases the context; Err reports nil once committed
	return err
}

func (b *Builder) finish(meta Metadata) (Result, error) {
	if b.ctx.Err() != nil {
		return Result{}, context.Cause(b.ctx)
	}
	if !b.dumpDone {
		return Result{}, errors.New("finish: no database dump was written")
	}
	if err := b.checkDuplicates(); err != nil {
		return Result{}, err
	}
	if _, err := b.tree.Write(zeroBlocks[:]); err != nil {
		return Result{}, err
	}
	if err := b.tree.submit(); err != nil {
		return Result{}, err
	}
	head := b.newStream('h')
	head.first = true
	data, err := b.head(meta)
	if err != nil {
		return Result{}, err
	}
	if _, err := head.Write(data); err != nil {
		return Result{}, err
	}
	if err := head.submit(); err != nil {
		return Result{}, err
	}
	streams := append([]*stream{head, b.dump}, b.large...)
	streams = append(streams, b.tree)
	blocks, _, err := b.commit(streams)
	if err != nil {
		return Result{}, err
	}
	res := Result{DumpSize: b.dumpSize, FilesSize: b.filesBytes.Load(), Files: int(b.files.Load()), Blocks: blocks}
	for _, blk := range blocks {
		res.Size += blk.Size
	}
	return res, nil
}

// commit ends the blob once every block is submitted: it waits for the compressors, stages the block
// that ends the gzip member, waits for the stagers and commits the blocks of streams in that order,
// then the trailer. It returns the committed blocks and the CRC-32 and length of what they inflate to.
func (b *Builder) commit(streams []*stream) ([]Block, rawSum, error) {
	close(b.jobs)
	b.compressors.Wait()
	trailer, sum, err := b.submitTrailer(streams)
	close(b.blocks)
	if err != nil {
		return nil, rawSum{}, err
	}
	b.stagers.Wait()
	if b.ctx.Err() != nil {
		return nil, rawSum{}, context.Cause(b.ctx)
	}

	var ids []string
	for _, s := range append(streams, trailer) {
		ids = append(ids, s.ids...)
	}
	blocks := make([]Block, 0, len(ids))
	b.stagedMu.Lock()
	for _, id := range ids {
		blk, ok := b.staged[id]
		if !ok {
			b.stagedMu.Unlock()
			return nil, rawSum{}, fmt.Errorf("finish: block %s was never staged", id)
		}
		blocks = append(blocks, blk)
	}
	b.stagedMu.Unlock()
	if int64(len(ids)) > b.maxBlocks {
		return nil, rawSum{}, b.tooManyBlocks(int64(len(ids)))
	}
	if err := b.sink.Commit(b.ctx, ids); err != nil {
		return nil, rawSum{}, fmt.Errorf("commit %d blocks: %w", len(ids), err)
	}
	b.committed.Store(true)
	return blocks, sum, nil
}

// submitTrailer hands the stagers the block that ends the gzip member, once every other block is
// compressed. Its CRC-32 combines those of the blocks in commit order (the head, staged last, comes
// first), leaving out the blocks of abandoned files; it is returned with the length. When streams hold
// no block (an empty dump blob) the trailer block starts with the gzip header.
func (b *Builder) submitTrailer(streams []*stream) (*stream, rawSum, error) {
	if b.ctx.Err() != nil {
		return nil, rawSum{}, context.Cause(b.ctx)
	}
	var chain crcChain
	empty := true
	b.stagedMu.Lock()
	for _, s := range streams {
		for _, id := range s.ids {
			sum, ok := b.sums[id]
			if !ok {
				b.stagedMu.Unlock()
				return nil, rawSum{}, fmt.Errorf("finish: block %s was never compressed", blockName(id))
			}
			chain.add(sum.crc, sum.n)
			empty = false
		}
	}
	b.stagedMu.Unlock()
	z := b.newStream('z')
	id, err := b.nextID(z.kind)
	if err != nil {
		return nil, rawSum{}, err
	}
	out, err := b.outs.get(b.ctx)
	if err != nil {
		return nil, rawSum{}, err
	}
	out.b = out.b[:0]
	if empty {
		out.b = append(out.b, gzipHeader[:]...)
	}
	out.b = append(out.b, gzipTrailer(chain.crc, chain.n)...)
	select {
	case b.blocks <- block{id: id, out: out, md5: md5.Sum(out.b)}:
	case <-b.ctx.Done():
		b.outs.put(out)
		return nil, rawSum{}, context.Cause(b.ctx)
	}
	z.ids = append(z.ids, id.id)
	return z, rawSum{crc: chain.crc, n: chain.n}, nil
}

// head is the first bytes of the tar: the .metadata entry and the db/db.backup header.
func (b *Builder) head(meta Metadata) ([]byte, error) {
	meta.DumpSize = strconv.FormatInt(b.dumpSize, 10)
	meta.FilesSize = strconv.FormatInt(b.filesBytes.Load(), 10)
	if meta.Duration == "" {
		meta.Duration = strconv.FormatInt(int64(time.Since(b.start).Round(time.Second)/time.Second), 10)
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	mh, err := tarHeader(MetadataName, int64(len(js)), b.opts.ModTime)
	if err != nil {
		return nil, err
	}
	dh, err := tarHeader(DumpName, b.dumpSize, b.opts.ModTime)
	if err != nil {
		return nil, err
	}
	return slices.Concat(mh, js, zeroBlocks[:padding(int64(len(js)))], dh), nil
}

func (b *Builder) checkDuplicates() error {
	slices.SortFunc(b.uuids, func(x, y [16]byte) int { return bytes.Compare(x[:], y[:]) })
	for i := 1; i < len(b.uuids); i++ {
		if b.uuids[i] == b.uuids[i-1] {
			h := hex.EncodeToString(b.uuids[i][:])
			return fmt.Errorf("finish: file %s-%s-%s-%s-%s was added twice", h[0:8], h[8:12], h[12:16], h[16:20], h[20:])
		}
	}
	return nil
}

// Abort stops the build: the goroutines end and nothing is committed. The blocks already staged are
// dropped by Azure after a week; the caller deletes the blob if one exists. Abort after a successful
// Finish does nothing; Abort after a failed one, or twice, is harmless.
func (b *Builder) Abort() {
	if b.committed.Load() {
		return
	}
	b.mu.Lock()
	if b.state == stateOpen {
		b.state = stateDone
	}
	b.mu.Unlock()
	b.fail(ErrAborted)
	b.wait()
}

// Err returns the error that failed the build, or nil while it is healthy and after it is committed.
func (b *Builder) Err() error {
	if b.committed.Load() || b.ctx.Err() == nil {
		return nil
	}
	return context.Cause(b.ctx)
}

// fail stops the build with err unless it has already failed; the first error wins.
func (b *Builder) fail(err error) { b.cancel(err) }

func (b *Builder) wait() {
	b.compressors.Wait()
	b.stagers.Wait()
}

func (b *Builder) enter(check func() error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.Err(); err != nil {
		return err
	}
	if b.state != stateOpen {
		return errors.New("archive builder: already finished")
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	b.active++
	return nil
}

func (b *Builder) leave() {
	b.mu.Lock()
	b.active--
	b.mu.Unlock()
}

func (b *Builder) report() {
	if b.opts.Progress != nil {
		b.opts.Progress(Progress{
			DumpBytes:  b.dumpBytes.Load(),
			Files:      int(b.files.Load()),
			FilesBytes: b.filesBytes.Load(),
		})
	}
}

func (b *Builder) nextID(kind byte) (blockID, error) {
	n := b.seq.Add(1)
	if live := n - b.dropped.Load(); live > b.maxBlocks {
		err := b.tooManyBlocks(live)
		b.fail(err)
		return blockID{}, err
	}
	return newBlockID(kind, n), nil
}

func (b *Builder) tooManyBlocks(n int64) error {
	return fmt.Errorf("archive needs %d or more blocks, more than the %d an Azure block blob holds: raise Options.ChunkSize (now %d bytes)",
		n, b.maxBlocks, b.opts.ChunkSize)
}
