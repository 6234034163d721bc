package backup_test

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
)

// The collector's model-based test. Backups (the real backup.StoreFiles), collector runs (the real
// Service.CollectFiles), snapshot deletions and recovery run as actors over in-memory stores. Every
// store call is a step at which a seeded scheduler chooses what happens next: one actor's call goes
// through, or an actor crashes there (it makes no further call, as a killed worker), or the files of
// the environment change, or the clock moves. After every step the test checks that every object of
// every Finished snapshot exists and is what its manifest says; at the end, after two collector runs
// past the grace period, that the store holds exactly the objects the live snapshots name.

const (
	modelNS   = "ns-m"
	modelEnv  = "7a556d31-813f-4b72-b8b3-9a3f6f340e5c"
	modelGrac = 12 * time.Hour
)

var errCrash = errors.New("injected crash")

type actorKey struct{}

// scheduler runs one actor call at a time, chosen by its rng.
type scheduler struct {
	mu      sync.Mutex
	rng     *rand.Rand
	now     time.Time
	parked  map[int]chan error
	crashed map[int]bool
	kinds   map[int]string
	running int
	next    int
	arrive  chan struct{}
}

func (s *scheduler) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// yield parks the calling actor until the scheduler lets it go on (nil) or crashes it.
func (s *scheduler) yield(ctx context.Context) error {
	id, ok := ctx.Value(actorKey{}).(int)
	if !ok {
		return nil // the scheduler itself, checking invariants
	}
	s.mu.Lock()
	if s.crashed[id] {
		s.mu.Unlock()
		return errCrash
	}
	ch := make(chan error)
	s.parked[id] = ch
	s.mu.Unlock()
	s.arrive <- struct{}{}
	return <-ch
}

// start runs fn as a new actor until its first call (or its end).
func (s *scheduler) start(kind string, fn func(ctx context.Context)) {
	s.mu.Lock()
	s.next++
	id := s.next
	s.running++
	s.kinds[id] = kind
	s.mu.Unlock()
	ctx := context.WithValue(context.Background(), actorKey{}, id)
	go func() {
		fn(ctx)
		s.mu.Lock()
		s.running--
		delete(s.kinds, id)
		s.mu.Unlock()
		s.arrive <- struct{}{}
	}()
	<-s.arrive
}

// resume lets a parked actor make its call (or crashes it) and waits until it parks again or ends.
func (s *scheduler) resume(id int, crash bool) {
	s.mu.Lock()
	ch := s.parked[id]
	delete(s.parked, id)
	var err error
	if crash {
		s.crashed[id] = true
		err = errCrash
	}
	s.mu.Unlock()
	ch <- err
	<-s.arrive
}

func (s *scheduler) parkedIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int, 0, len(s.parked))
	for id := range s.parked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *scheduler) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// sourceBlob is one file document's blob in the environment's container.
type sourceBlob struct {
	content string
	etag    int
	noMD5   bool
}

func (b sourceBlob) file(uuid string) backup.SourceFile {
	f := backup.SourceFile{UUID: uuid, Size: int64(len(b.content)), ETag: fmt.Sprintf(`"0x%d"`, b.etag)}
	if !b.noMD5 {
		sum := md5.Sum([]byte(b.content))
		f.MD5 = sum[:]
	}
	return f
}

type storeObject struct {
	content string
	md5     []byte
	source  backup.SourceFile // what it was copied from
	mod     time.Time
}

type manifestBlob struct {
	h       backup.ManifestHeader
	entries []backup.ManifestEntry
}

// world is every store of the model: the source container, the file store, the collector state, the
// manifests, and (through memstore) the snapshot records.
type world struct {
	s *scheduler

	mu        sync.Mutex
	sources   map[string]sourceBlob
	etags     int
	objects   map[string]storeObject
	state     backup.CollectorState
	stateETag int
	manifests map[string]manifestBlob
	records   *memstore.Store
}

// FileStore.

func (w *world) WalkStores(ctx context.Context, fn func(string, string) error) error {
	if err := w.s.yield(ctx); err != nil {
		return err
	}
	return fn(modelNS, modelEnv)
}

func (w *world) WalkObjects(ctx context.Context, ns, env string, fn func(backup.StoreObject) error) error {
	if err := w.s.yield(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	names := make([]string, 0, len(w.objects))
	for n := range w.objects {
		names = append(names, n)
	}
	slices.Sort(names)
	objs := make([]backup.StoreObject, len(names))
	for i, n := range names {
		o := w.objects[n]
		objs[i] = backup.StoreObject{Name: n, Size: int64(len(o.content)), MD5: o.md5, LastModified: o.mod}
	}
	w.mu.Unlock()
	for _, o := range objs {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) DeleteObject(ctx context.Context, ns, env, name string) error {
	if err := w.s.yield(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.objects, name)
	return nil
}

func (w *world) ReadCollectorState(ctx context.Context, ns, env string) (backup.CollectorState, string, error) {
	if err := w.s.yield(ctx); err != nil {
		return backup.CollectorState{}, "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stateETag == 0 {
		return backup.CollectorState{}, "", nil
	}
	st := w.state
	st.Deleting = slices.Clone(st.Deleting)
	return st, fmt.Sprint(w.stateETag), nil
}

func (w *world) WriteCollectorState(ctx context.Context, ns, env string, st backup.CollectorState, etag string) (string, error) {
	if err := w.s.yield(ctx); err != nil {
		return "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := ""
	if w.stateETag != 0 {
		cur = fmt.Sprint(w.stateETag)
	}
	if etag != cur {
		return "", backup.Errorf(backup.CodeConflict, "the collector state changed")
	}
	w.etags++
	w.state, w.stateETag = st, 1000+w.etags
	w.state.Deleting = slices.Clone(st.Deleting)
	return fmt.Sprint(w.stateETag), nil
}

// Manifests.

func (w *world) WriteManifest(ctx context.Context, path string, h backup.ManifestHeader, entries []backup.ManifestEntry) error {
	if err := w.s.yield(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.manifests[path] = manifestBlob{h: h, entries: slices.Clone(entries)}
	return nil
}

func (w *world) ReadManifest(ctx context.Context, path string, fn func(backup.ManifestEntry) error) (backup.ManifestHeader, error) {
	if err := w.s.yield(ctx); err != nil {
		return backup.ManifestHeader{}, err
	}
	w.mu.Lock()
	m, ok := w.manifests[path]
	w.mu.Unlock()
	if !ok {
		return backup.ManifestHeader{}, backup.Errorf(backup.CodeNotFound, "no manifest %s", path)
	}
	for _, e := range m.entries {
		if err := fn(e); err != nil {
			return m.h, err
		}
	}
	return m.h, nil
}

// ArchiveBlobs: the snapshots container, where only manifests matter here.

func (w *world) ListSnapshotBlobs(ctx context.Context, ns, env, id string) ([]string, error) {
	if err := w.s.yield(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for p := range w.manifests {
		if strings.HasPrefix(p, ns+"/"+env+"/"+id+"/") {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (w *world) DeleteBlob(ctx context.Context, path string) error {
	if err := w.s.yield(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.manifests, path)
	return nil
}

func (w *world) WalkArchives(context.Context, func(backup.ArchiveBlob) error) error { return nil }

// yieldingSnapshots makes every snapshot record call a step too.
type yieldingSnapshots struct {
	backup.SnapshotStore
	s *scheduler
}

func (y yieldingSnapshots) GetSnapshot(ctx context.Context, ns, env, id string) (backup.Snapshot, error) {
	if err := y.s.yield(ctx); err != nil {
		return backup.Snapshot{}, err
	}
	return y.SnapshotStore.GetSnapshot(ctx, ns, env, id)
}

func (y yieldingSnapshots) ListSnapshots(ctx context.Context, ns, env string, offset, limit int) ([]backup.Snapshot, int, error) {
	if err := y.s.yield(ctx); err != nil {
		return nil, 0, err
	}
	return y.SnapshotStore.ListSnapshots(ctx, ns, env, offset, limit)
}

func (y yieldingSnapshots) CreateSnapshot(ctx context.Context, sn backup.Snapshot) error {
	if err := y.s.yield(ctx); err != nil {
		return err
	}
	return y.SnapshotStore.CreateSnapshot(ctx, sn)
}

func (y yieldingSnapshots) UpdateSnapshot(ctx context.Context, ns, env, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	if err := y.s.yield(ctx); err != nil {
		return backup.Snapshot{}, false, err
	}
	return y.SnapshotStore.UpdateSnapshot(ctx, ns, env, id, fn)
}

func (y yieldingSnapshots) DeleteSnapshot(ctx context.Context, ns, env, id string) error {
	if err := y.s.yield(ctx); err != nil {
		return err
	}
	return y.SnapshotStore.DeleteSnapshot(ctx, ns, env, id)
}

// Source container, as StoreFiles's callbacks see it.

func (w *world) listSources(ctx context.Context, wanted map[string]bool) (map[string]backup.SourceFile, error) {
	if err := w.s.yield(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]backup.SourceFile{}
	for u, b := range w.sources {
		if wanted[u] {
			out[u] = b.file(u)
		}
	}
	return out, nil
}

func (w *world) source(ctx context.Context, uuid string) (backup.SourceFile, bool, error) {
	if err := w.s.yield(ctx); err != nil {
		return backup.SourceFile{}, false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	b, ok := w.sources[uuid]
	return b.file(uuid), ok, nil
}

// copyFile is Copy Blob From URL with the source's ETag as a condition and If-None-Match: * on the
// destination: store objects are never overwritten.
// readBack changes nothing here: the fake keeps what it copies.
func (w *world) copyFile(ctx context.Context, f backup.SourceFile, object string, _ bool) (backup.CopyOutcome, error) {
	if err := w.s.yield(ctx); err != nil {
		return backup.CopyOutcome{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.objects[object]; ok {
		return backup.CopyOutcome{Existed: true}, nil
	}
	b, ok := w.sources[f.UUID]
	switch {
	case !ok:
		return backup.CopyOutcome{}, fmt.Errorf("copy: %w", backup.ErrSourceMissing)
	case b.file(f.UUID).ETag != f.ETag:
		return backup.CopyOutcome{}, fmt.Errorf("copy: %w", backup.ErrSourceChanged)
	}
	src := b.file(f.UUID)
	sum := md5.Sum([]byte(b.content))
	w.objects[object] = storeObject{content: b.content, md5: sum[:], source: src, mod: w.s.clock()}
	return backup.CopyOutcome{}, nil
}

// model is one run of the test.
type model struct {
	t     *testing.T
	seed  uint64
	s     *scheduler
	w     *world
	svc   *backup.Service
	snaps backup.SnapshotStore // yielding
	uuids []string
	n     int
}

func newModel(t *testing.T, seed uint64) *model {
	s := &scheduler{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), now: t0, parked: map[int]chan error{},
		crashed: map[int]bool{}, kinds: map[int]string{}, arrive: make(chan struct{})}
	w := &world{s: s, sources: map[string]sourceBlob{}, objects: map[string]storeObject{}, manifests: map[string]manifestBlob{}, records: memstore.New()}
	m := &model{t: t, seed: seed, s: s, w: w, snaps: yieldingSnapshots{SnapshotStore: w.records, s: s}}
	stores := w.records.Stores()
	stores.Snapshots = m.snaps
	m.svc = backup.NewService(backup.Deps{Stores: stores, Archives: w, Layout: layout{}, FileStore: w, Manifests: w,
		Now: s.clock, Log: zerolog.Nop(), CollectorGrace: modelGrac})
	for i := range 12 {
		u := fmt.Sprintf("%08x-0000-4000-8000-%012x", seed&0xffffffff, i)
		m.uuids = append(m.uuids, u)
		w.etags++
		w.sources[u] = sourceBlob{content: fmt.Sprintf("file %d v0", i), etag: w.etags, noMD5: i%3 == 0}
	}
	return m
}

func (m *model) rnd(n int) int { return m.s.rng.IntN(n) }

// backupActor makes one snapshot: record, files and manifest (StoreFiles), Finished.
func (m *model) backupActor() {
	m.n++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", m.n)
	var files []string
	for _, u := range m.uuids {
		if m.rnd(4) != 0 {
			files = append(files, u)
		}
	}
	manifest := layout{}.SnapshotManifest(modelNS, modelEnv, id, 1)
	m.s.start("backup", func(ctx context.Context) {
		sn := backup.Snapshot{ID: id, Namespace: modelNS, EnvironmentID: modelEnv, Status: backup.SnapshotProcessing,
			Kind: backup.KindNightly, CreatedAt: m.s.clock(), OperationID: "op-" + id, Fence: 1}
		if m.snaps.CreateSnapshot(ctx, sn) != nil {
			return
		}
		res, err := backup.StoreFiles(ctx, m.w, m.w, backup.StoreFilesRequest{Namespace: modelNS, EnvironmentID: modelEnv, SnapshotID: id,
			ManifestPath: manifest, Files: files, Sources: m.w.listSources, Source: m.w.source, Copy: m.w.copyFile,
			Workers: 1, Now: m.s.clock, Poll: time.Nanosecond})
		if err != nil {
			return // the record stays Processing: recovery fails it
		}
		_, _, _ = m.snaps.UpdateSnapshot(ctx, modelNS, modelEnv, id, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
			if !ok || cur.Status != backup.SnapshotProcessing || cur.Deleted() {
				return cur, false, nil
			}
			cur.Status, cur.ManifestPath, cur.FilesCount = backup.SnapshotFinished, manifest, len(res.Entries)
			return cur, true, nil
		})
	})
}

// deleteActor deletes a Finished snapshot as Service.DeleteSnapshot does: mark, blobs, record.
func (m *model) deleteActor() {
	all, _, _ := m.w.records.ListSnapshots(context.Background(), modelNS, modelEnv, 0, 1000)
	var finished []backup.Snapshot
	for _, sn := range all {
		if sn.Status == backup.SnapshotFinished {
			finished = append(finished, sn)
		}
	}
	if len(finished) == 0 {
		return
	}
	sn := finished[m.rnd(len(finished))]
	m.s.start("delete", func(ctx context.Context) {
		_, _, err := m.snaps.UpdateSnapshot(ctx, modelNS, modelEnv, sn.ID, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
			if !ok || cur.Deleted() {
				return cur, false, nil
			}
			cur.DeletedAt = m.s.clock()
			return cur, true, nil
		})
		if err != nil || m.w.DeleteBlob(ctx, sn.ManifestPath) != nil {
			return
		}
		_ = m.snaps.DeleteSnapshot(ctx, modelNS, modelEnv, sn.ID)
	})
}

// recover fails the Processing snapshots whose backup actor ended (crashed or gave up), as the
// pipeline's recovery does for a lost worker.
func (m *model) recover() {
	if m.s.count("backup") > 0 {
		return
	}
	all, _, _ := m.w.records.ListSnapshots(context.Background(), modelNS, modelEnv, 0, 1000)
	for _, sn := range all {
		if sn.Status == backup.SnapshotProcessing {
			_, _, _ = m.w.records.UpdateSnapshot(context.Background(), modelNS, modelEnv, sn.ID, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
				cur.Status = backup.SnapshotFailed
				return cur, ok, nil
			})
		}
	}
}

func (m *model) collectActor() {
	m.s.start("collect", func(ctx context.Context) {
		_, _ = m.svc.CollectFiles(ctx, modelNS, modelEnv, zerolog.Nop())
	})
}

// mutate changes the environment's files: a new version of one (new ETag, new content), or one deleted
// or brought back.
func (m *model) mutate() {
	u := m.uuids[m.rnd(len(m.uuids))]
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	m.w.etags++
	b, ok := m.w.sources[u]
	switch r := m.rnd(10); {
	case !ok || r < 6:
		m.w.sources[u] = sourceBlob{content: fmt.Sprintf("%s v%d", u, m.w.etags), etag: m.w.etags, noMD5: b.noMD5}
	case r < 8:
		delete(m.w.sources, u)
	default: // rewritten with the same bytes: a new ETag, the same MD5
		b.etag = m.w.etags
		m.w.sources[u] = b
	}
}

func (m *model) advance(max time.Duration) {
	d := time.Duration(m.s.rng.Int64N(int64(max))) + time.Second
	m.s.mu.Lock()
	m.s.now = m.s.now.Add(d)
	m.s.mu.Unlock()
}

// step makes one random move.
func (m *model) step() {
	parked := m.s.parkedIDs()
	switch r := m.rnd(100); {
	case r < 62 && len(parked) > 0:
		m.s.resume(parked[m.rnd(len(parked))], false)
	case r < 64 && len(parked) > 0:
		m.s.resume(parked[m.rnd(len(parked))], true)
	case r < 71 && m.s.count("backup") < 3:
		m.backupActor()
	case r < 77 && m.s.count("collect") < 2:
		m.collectActor()
	case r < 82 && m.s.count("delete") < 2:
		m.deleteActor()
	case r < 86:
		m.mutate()
	case r < 87:
		m.recover()
	case m.s.count("collect") > 0:
		// A collector run is between two calls: time moves in small steps, less than the margin a run
		// keeps before its lease ends (a worker is not paused for minutes between a check and a call).
		m.advance(10 * time.Second)
	default:
		m.advance(30 * time.Hour)
	}
}

// drain lets every actor run to its end, moving the clock when they wait (for a claim's lease).
func (m *model) drain() {
	for i := 0; ; i++ {
		parked := m.s.parkedIDs()
		if len(parked) == 0 {
			return
		}
		if i > 100000 {
			m.t.Fatalf("seed %d: actors never finish", m.seed)
		}
		if i%20 == 19 {
			m.advance(10 * time.Second)
		}
		m.s.resume(parked[m.rnd(len(parked))], false)
		m.check("draining")
	}
}

// check: every Finished snapshot's manifest exists and every object it names exists, is immutable and
// holds the bytes of the file version the entry describes.
func (m *model) check(when string) {
	m.t.Helper()
	all, _, _ := m.w.records.ListSnapshots(context.Background(), modelNS, modelEnv, 0, 1000)
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	for _, sn := range all {
		if sn.Status != backup.SnapshotFinished {
			continue
		}
		mf, ok := m.w.manifests[sn.ManifestPath]
		if !ok {
			m.t.Fatalf("seed %d, %s: Finished snapshot %s has no manifest", m.seed, when, sn.ID)
		}
		for _, e := range mf.entries {
			o, ok := m.w.objects[e.Object]
			if !ok {
				m.t.Fatalf("seed %d, %s: object %s of Finished snapshot %s is gone", m.seed, when, e.Object, sn.ID)
			}
			if backup.ObjectName(o.source) != e.Object || int64(len(o.content)) != e.Size || (e.MD5 != nil && !slices.Equal(e.MD5, o.md5)) {
				m.t.Fatalf("seed %d, %s: object %s does not hold what snapshot %s's entry says: %+v", m.seed, when, e.Object, sn.ID, e)
			}
		}
	}
}

// live is every object that a live snapshot (Finished, or Processing) names.
func (m *model) live() map[string]bool {
	all, _, _ := m.w.records.ListSnapshots(context.Background(), modelNS, modelEnv, 0, 1000)
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	names := map[string]bool{}
	for _, sn := range all {
		for p, mf := range m.w.manifests {
			if (sn.Status == backup.SnapshotFinished && p == sn.ManifestPath) ||
				(sn.Status == backup.SnapshotProcessing && strings.HasPrefix(p, modelNS+"/"+modelEnv+"/"+sn.ID+"/")) {
				for _, e := range mf.entries {
					names[e.Object] = true
				}
			}
		}
	}
	return names
}

func (m *model) run(steps int) (finished, deleted int) {
	for range steps {
		m.step()
		m.check("running")
	}
	m.drain()
	m.recover()
	m.check("drained")
	// Two runs after the grace period (and any lease): nothing unreferenced survives them.
	for range 2 {
		m.advance(time.Minute)
		m.s.mu.Lock()
		m.s.now = m.s.now.Add(modelGrac + backup.CollectorLease + backup.CollectorClockSkew)
		m.s.mu.Unlock()
		if _, err := m.svc.CollectFiles(context.Background(), modelNS, modelEnv, zerolog.Nop()); err != nil {
			m.t.Fatalf("seed %d: final collection: %v", m.seed, err)
		}
		m.check("collected")
	}
	live := m.live()
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	for name := range m.w.objects {
		if !live[name] {
			m.t.Fatalf("seed %d: unreferenced object %s survived two collector runs", m.seed, name)
		}
	}
	for name := range live {
		if _, ok := m.w.objects[name]; !ok {
			m.t.Fatalf("seed %d: live object %s is gone", m.seed, name)
		}
	}
	all, _, _ := m.w.records.ListSnapshots(context.Background(), modelNS, modelEnv, 0, 1000)
	for _, sn := range all {
		if sn.Status == backup.SnapshotFinished {
			finished++
		}
	}
	return finished, m.n - len(all)
}

func TestCollectorModel(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 60
	}
	var finished, gone int
	for seed := range uint64(seeds) {
		f, d := newModel(t, seed+1).run(400)
		finished += f
		gone += d
	}
	// The model must exercise what it checks: snapshots finished and deleted, objects reused.
	if finished < seeds || gone < seeds {
		t.Errorf("over %d runs only %d snapshots were left Finished and %d deleted: the model does too little", seeds, finished, gone)
	}
	t.Logf("%d runs: %d snapshots Finished at the end, %d deleted or failed", seeds, finished, gone)
}
