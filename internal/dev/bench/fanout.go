package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/config"
	"github.com/mxazure/backups/internal/schedule"
	"github.com/mxazure/backups/internal/tablestore"
)

// The fan-out benchmark: the day's run of automatic backups (backup.Service.RunSchedule, what a
// schedule timer calls) over every environment of a Table Storage account (Azurite), measured at two
// or more sizes to show its cost grows linearly. The environments are seeded through the tablestore
// adapter, untimed; the run itself goes through a tablestore.Store whose pipeline counts every request
// (TableCounter) and a Publisher that counts what would be sent to Service Bus without sending it
// (CountingPublisher), so the time is the service's and Table Storage's alone.

// Fan-out targets (the automatic-backups issue).
const (
	// FanOutLinearTarget: the run over 10 × the environments takes at most 12 × as long.
	FanOutLinearTarget = 12.0
	// ConsumptionTimeout is the Consumption plan's limit on one function run, far stricter than
	// host.json's functionTimeout (FunctionTimeout) on the Elastic Premium plan the app runs on.
	ConsumptionTimeout = 10 * time.Minute
	FunctionTimeout    = 12 * time.Hour
	// FanOutPerNamespace is how many environments each seeded namespace holds.
	FanOutPerNamespace = 100
	// fanOutSeedWorkers write the environments at once while seeding.
	fanOutSeedWorkers = 16
	// FanOutTrigger is the timer the benchmark's runs are made as.
	FanOutTrigger = "NightlyBackups"
)

// Service Bus batches, as the azservicebus adapter (bus.ServiceBus.Publish) makes them: it adds
// messages to a batch until the next one does not fit, sends it and starts another. A batch holds at
// most the link's largest message: 256 KiB on the Standard tier (1 MiB and more on Premium), so the
// estimate is for Standard, the smaller. A message's size in a batch is estimated as its body, its
// MessageId, SessionId and ContentType, plus amqpOverhead for the rest of its AMQP encoding (the header,
// the properties section's framing, the x-opt-scheduled-enqueue-time annotation and the batch's framing
// of each message): an upper estimate, so the batches counted are not fewer than the adapter would send.
const (
	serviceBusBatchBytes = 256 << 10
	amqpOverhead         = 128
)

// FanOutResult is the fan-out over one number of environments.
type FanOutResult struct {
	Environments int // seeded, in Namespaces namespaces, every one with backups enabled
	Namespaces   int
	Eligible     int           // environments a run must send a message for (deployed or in a transient state, not Deleted)
	Seed         time.Duration // writing them, untimed otherwise
	// Walls are the timed runs, each on another day (a day has one run), so each walks everything;
	// Waits the part of each that its Table Storage requests waited for their answers (TableCounter).
	Walls, Waits []time.Duration
	// Table are the Table Storage requests of the first run, Publish what it gave the publisher; every
	// later run made the same number of each (checked).
	Table   TableCalls
	Publish PublishStats
}

// Wall is the median of the runs' times, Wait of their waits for Table Storage.
func (r FanOutResult) Wall() time.Duration { return medianDuration(r.Walls) }
func (r FanOutResult) Wait() time.Duration { return medianDuration(r.Waits) }

func medianDuration(ds []time.Duration) time.Duration {
	return time.Duration(Median(seconds(ds, func(d time.Duration) time.Duration { return d })) * float64(time.Second))
}

// FanOutReport is the fan-out benchmark's results, smallest first.
type FanOutReport struct {
	Runs []FanOutResult
}

// TableCalls counts Table Storage requests (every try the SDK sends) by table (without the prefix)
// and kind: "query" (a list of entities, one page), "point read", "write" (insert, replace, merge,
// delete), "table" (creating, listing or deleting tables).
type TableCalls map[string]map[string]int

// Total is every request counted.
func (c TableCalls) Total() int {
	n := 0
	for _, kinds := range c {
		for _, k := range kinds {
			n += k
		}
	}
	return n
}

// Text lists the counts, tables in name order: "Environments 10 query; ScheduleRuns 22 point read, 22 write".
func (c TableCalls) Text() string {
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(c)) {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(c[t])) {
			kinds = append(kinds, fmt.Sprintf("%d %s", c[t][k], k))
		}
		parts = append(parts, t+" "+strings.Join(kinds, ", "))
	}
	return strings.Join(parts, "; ")
}

// TableCounter is an azcore pipeline policy (tablestore.WithPolicy) that counts the requests of a Store
// whose tables have the prefix Prefix. It is safe for concurrent use.
type TableCounter struct {
	Prefix string

	mu    sync.Mutex
	calls TableCalls
	wait  time.Duration // from sending each request to its answer's headers, summed
}

// Do counts the request and passes it on.
func (c *TableCounter) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	table, kind := classifyTableCall(raw.Method, raw.URL.Path, c.Prefix)
	t := time.Now()
	resp, err := req.Next()
	took := time.Since(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = TableCalls{}
	}
	if c.calls[table] == nil {
		c.calls[table] = map[string]int{}
	}
	c.calls[table][kind]++
	c.wait += took
	return resp, err
}

// Take returns the counts since the last Take and the time their requests waited for Table Storage
// (from sending each to its answer's headers: reading and decoding a page comes after), and starts
// again from zero.
func (c *TableCounter) Take() (TableCalls, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, wait := c.calls, c.wait
	if out == nil {
		out = TableCalls{}
	}
	c.calls, c.wait = nil, 0
	return out, wait
}

// classifyTableCall names a Table Storage request's table and kind from its method and URL path: the
// path's last segment is "<prefix><table>" with "()" for a query or "(PartitionKey='…',RowKey='…')" for
// one entity, or "Tables…" for the table service itself; a transaction ("$batch") is a write.
func classifyTableCall(method, path, prefix string) (table, kind string) {
	head, keys, _ := strings.Cut(path, "(")
	name := head[strings.LastIndex(head, "/")+1:]
	switch {
	case name == "Tables":
		return "Tables", "table"
	case name == "$batch":
		return "$batch", "write"
	}
	table = strings.TrimPrefix(name, prefix)
	point := strings.HasPrefix(keys, "PartitionKey=")
	switch {
	case method == http.MethodGet && point:
		return table, "point read"
	case method == http.MethodGet:
		return table, "query"
	default:
		return table, "write"
	}
}

// PublishStats is what a fan-out gave its publisher.
type PublishStats struct {
	Calls    int   // Publish calls
	Messages int   // messages in them
	Bytes    int64 // estimated size in Service Bus batches (messageSize)
	// Batches is how many Service Bus batches the azservicebus adapter would send for these calls, on
	// the Standard tier (serviceBusBatchBytes).
	Batches int
}

// CountingPublisher is a backup.Publisher that sends nothing: it counts Publish calls, messages and
// their bytes, estimates the Service Bus batches they would take, and keeps each message's MessageId
// and body for Check. Every message must be for Entity. It is safe for concurrent use.
type CountingPublisher struct {
	Entity string

	mu    sync.Mutex
	stats PublishStats
	msgs  []backup.Message
	wrong []string // entities other than Entity that were published to
}

var _ backup.Publisher = (*CountingPublisher)(nil)

// Publish counts msgs.
func (p *CountingPublisher) Publish(_ context.Context, entity string, msgs ...backup.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if entity != p.Entity {
		p.wrong = append(p.wrong, entity)
	}
	p.stats.Calls++
	p.stats.Messages += len(msgs)
	sizes := make([]int, len(msgs))
	for i, m := range msgs {
		sizes[i] = messageSize(m)
		p.stats.Bytes += int64(sizes[i])
	}
	p.stats.Batches += batchesFor(sizes, serviceBusBatchBytes)
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *CountingPublisher) Ping(context.Context) error  { return nil }
func (p *CountingPublisher) Close(context.Context) error { return nil }

// Take returns what was published since the last Take and starts again from zero.
func (p *CountingPublisher) Take() (PublishStats, []backup.Message, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, m, w := p.stats, p.msgs, p.wrong
	p.stats, p.msgs, p.wrong = PublishStats{}, nil, nil
	return s, m, w
}

// messageSize estimates a message's size in a Service Bus batch (see amqpOverhead).
func messageSize(m backup.Message) int {
	n := len(m.Body) + len(m.ID) + len(m.SessionID) + len(m.ContentType) + amqpOverhead
	for k, v := range m.Properties {
		n += len(k) + len(fmt.Sprint(v)) + 8
	}
	return n
}

// batchesFor is how many batches of at most limit bytes the messages of sizes take when filled in
// order, as the adapter fills them: a message that does not fit closes the batch (a message larger
// than limit alone would be refused; it is counted as one batch).
func batchesFor(sizes []int, limit int) int {
	batches, used := 0, 0
	for _, s := range sizes {
		if used > 0 && used+s <= limit {
			used += s
			continue
		}
		batches++
		used = s
	}
	return batches
}

// fanOutMessage is the part of an automatic-backup message's body the check reads (the body
// backup.RunSchedule sends, documented in docs/operations.md).
type fanOutMessage struct {
	Namespace     string    `json:"namespace"`
	EnvironmentID string    `json:"environment_id"`
	Day           string    `json:"day"`
	Attempt       int       `json:"attempt"`
	At            time.Time `json:"at"`
	RunStartedAt  time.Time `json:"run_started_at"`
	Recheck       bool      `json:"recheck"`
}

// CheckFanOut verifies one run's messages: one per eligible environment (eligible maps
// "<namespace>|<id>" of each), every MessageId unique, each for that day's run started at start, its
// first try (not a recheck), scheduled within [start, start+spread) and at the time its body says.
func CheckFanOut(msgs []backup.Message, eligible map[string]bool, day string, start time.Time, spread time.Duration) error {
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 10 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if len(msgs) != len(eligible) {
		bad("%d messages sent for %d eligible environments", len(msgs), len(eligible))
	}
	ids := make(map[string]bool, len(msgs))
	envs := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		if ids[m.ID] {
			bad("MessageId %q sent twice", m.ID)
		}
		ids[m.ID] = true
		var b fanOutMessage
		if err := json.Unmarshal(m.Body, &b); err != nil {
			bad("message %q: body is not JSON: %v", m.ID, err)
			continue
		}
		key := backup.EnvironmentKey(b.Namespace, b.EnvironmentID)
		switch {
		case !eligible[key]:
			bad("message %q for %s, which is not an eligible environment", m.ID, key)
		case envs[key]:
			bad("environment %s got two messages", key)
		case b.Day != day || b.Attempt != 0 || b.Recheck || !b.RunStartedAt.Equal(start):
			bad("message %q: day %s, try %d (recheck %v), run started %s; want %s, 0 (false), %s", m.ID, b.Day, b.Attempt, b.Recheck,
				b.RunStartedAt, day, start)
		case !m.ScheduledAt.Equal(b.At) || m.ScheduledAt.Before(start) || !m.ScheduledAt.Before(start.Add(max(spread, time.Second))):
			bad("message %q: scheduled at %s (body %s), not within the spread from %s", m.ID, m.ScheduledAt, b.At, start)
		}
		envs[key] = true
	}
	return errors.Join(errs...)
}

// fanOutEnvironment is the i-th seeded environment (of per a namespace) and whether a run must send it
// a message. Of every 50 environments of a namespace, one is Deleted, one Stopped with nothing deployed
// and one Deploying with nothing deployed yet (no message: nothing to back up), one is Deploying an
// update (deployed: a message, its try is repeated later that night), two are Stopped and deployed and
// the rest Running and deployed; so 94 of 100 are eligible.
func fanOutEnvironment(i, per int, dbHost string) (backup.Environment, bool) {
	ns := fanOutNamespace(i / per)
	j := i % per
	id := uuid.NewSHA1(fanOutIDs, fmt.Appendf(nil, "environment-%d", i)).String()
	e := backup.Environment{ID: id, Namespace: ns, AppID: fmt.Sprintf("app-%s-%d", ns, j), Name: fmt.Sprintf("env-%03d", j),
		State: backup.StateRunning, Deployed: true, DeploymentPackage: fmt.Sprintf("App_%d.0.0.%d.mda", 9+j%3, j), ModelVersion: "9.24.0",
		Database: backup.DatabaseLocation{Host: dbHost, Port: 5432, Name: fmt.Sprintf("db_%s_%03d", strings.ReplaceAll(ns, "-", "_"), j),
			Role: fmt.Sprintf("role_%03d", j)},
		Files:   backup.FileLocation{Container: fmt.Sprintf("files-%s-%03d", ns, j), Prefix: ""},
		EventID: "fanout-seed-" + id}
	eligible := true
	switch {
	case j%50 == 7:
		e.State, eligible = backup.StateDeleted, false
	case j%50 == 19:
		e.State, e.Deployed, eligible = backup.StateStopped, false, false
	case j%50 == 31:
		e.State, e.Deployed, eligible = backup.StateDeploying, false, false
	case j%50 == 43:
		e.State = backup.StateDeploying
	case j%25 == 3:
		e.State = backup.StateStopped
	}
	return e, eligible
}

var fanOutIDs = uuid.MustParse("b7e0c001-0000-4000-8000-00000000fa00")

func fanOutNamespace(k int) string { return fmt.Sprintf("fanout-%04d", k) }

// FanOutOptions configure FanOut.
type FanOutOptions struct {
	ConnectionString string // of the Table Storage account (the lab's Azurite)
	Environments     int
	// Runs is how many timed runs to make, each on another day (default 1), after one untimed run
	// (connections, and the first reads of the tables).
	Runs int
	Log  zerolog.Logger
}

// FanOut seeds opts.Environments environments into new tables (a prefix of their own, removed
// afterwards), in namespaces of FanOutPerNamespace, all enabled; then runs backup.Service.RunSchedule
// over them 1 + opts.Runs times, each for the next day, the first untimed. It counts each run's Table
// Storage requests and what it publishes, and checks its messages and its schedule run record: a check
// that fails is an error.
func FanOut(ctx context.Context, opts FanOutOptions) (res FanOutResult, err error) {
	if opts.Environments < 1 {
		return res, fmt.Errorf("fan-out over %d environments", opts.Environments)
	}
	runs := max(opts.Runs, 1)
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	prefix := fmt.Sprintf("fanout%d%s", opts.Environments, hex.EncodeToString(suffix))
	log := opts.Log.With().Int("environments", opts.Environments).Logger()

	seed, err := tablestore.NewFromConnectionString(opts.ConnectionString, prefix)
	if err != nil {
		return res, err
	}
	defer func() {
		if derr := dropTables(context.WithoutCancel(ctx), opts.ConnectionString, prefix); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err := seed.EnsureTables(ctx); err != nil {
		return res, err
	}
	t := time.Now()
	eligible, err := seedFanOut(ctx, seed, opts.Environments)
	if err != nil {
		return res, fmt.Errorf("seed %d environments: %w", opts.Environments, err)
	}
	res = FanOutResult{Environments: opts.Environments, Namespaces: (opts.Environments + FanOutPerNamespace - 1) / FanOutPerNamespace,
		Eligible: len(eligible), Seed: time.Since(t)}
	log.Info().Msgf("seeded %d environments (%d eligible) in %d namespaces in %s", res.Environments, res.Eligible, res.Namespaces, Elapsed(res.Seed))

	counter := &TableCounter{Prefix: prefix}
	store, err := tablestore.NewFromConnectionString(opts.ConnectionString, prefix, tablestore.WithPolicy(counter))
	if err != nil {
		return res, err
	}
	err = timeRuns(ctx, store.Stores(), counter, eligible, runs, log, &res)
	return res, err
}

// timeRuns makes the untimed run and the runs timed runs of RunSchedule over stores (whose Table
// Storage requests counter counts), checking each, into res.
func timeRuns(ctx context.Context, stores backup.Stores, counter *TableCounter, eligible map[string]bool, runs int,
	log zerolog.Logger, res *FanOutResult) error {
	pub := &CountingPublisher{Entity: backup.QueueAutomatic}
	plan, err := defaultPlan()
	if err != nil {
		return err
	}
	svc := backup.NewService(backup.Deps{Stores: stores, Publisher: pub, Plan: plan, Log: log})
	base := time.Now().UTC().Truncate(time.Second)
	svcLog := log.Level(zerolog.WarnLevel) // its two info lines per run would drown the benchmark's
	n := res.Environments
	for k := -1; k < runs; k++ { // -1: the untimed run
		now := base.AddDate(0, 0, k+1)
		counter.Take()
		pub.Take()
		t := time.Now()
		if err := svc.RunSchedule(ctx, FanOutTrigger, now, svcLog); err != nil {
			return fmt.Errorf("run %d of the fan-out over %d environments: %w", k+1, n, err)
		}
		wall := time.Since(t)
		calls, waited := counter.Take()
		stats, msgs, wrong := pub.Take()
		if len(wrong) > 0 {
			return fmt.Errorf("the fan-out published to %s, not only to %s", strings.Join(wrong, ", "), backup.QueueAutomatic)
		}
		day := plan.Calendar.DayOf(now).String()
		if err := CheckFanOut(msgs, eligible, day, now, plan.Spread); err != nil {
			return fmt.Errorf("the fan-out over %d environments, run %d: %w", n, k+1, err)
		}
		if err := checkRunRecord(ctx, stores.Schedule, day, len(eligible)); err != nil {
			return err
		}
		if k < 0 {
			res.Table, res.Publish = calls, stats
			continue
		}
		if calls.Total() != res.Table.Total() || stats != res.Publish {
			return fmt.Errorf("run %d of the fan-out over %d environments made %d table calls and %+v, the first %d and %+v",
				k+1, n, calls.Total(), stats, res.Table.Total(), res.Publish)
		}
		res.Walls, res.Waits = append(res.Walls, wall), append(res.Waits, waited)
		log.Info().Msgf("fan-out run %d of %d: %.3f s (waiting for Table Storage %.3f s), %d Table calls, %d Publish calls, %d messages",
			k+1, runs, wall.Seconds(), waited.Seconds(), calls.Total(), stats.Calls, stats.Messages)
	}
	return nil
}

// defaultPlan is the schedule of a deployment with the default settings (the three timers, UTC, a
// spread of 2 hours).
func defaultPlan() (schedule.Plan, error) {
	c, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		return schedule.Plan{}, err
	}
	plan := c.SchedulePlan()
	if len(plan.Timers) == 0 || plan.Spread <= 0 {
		return plan, fmt.Errorf("the default schedule has %d timers and a spread of %s", len(plan.Timers), plan.Spread)
	}
	return plan, nil
}

// seedStore is what seeding writes through: the tablestore adapter (or memstore, in tests).
type seedStore interface {
	UpdateEnvironment(ctx context.Context, namespace, id string, fn backup.UpdateFunc[backup.Environment]) (backup.Environment, bool, error)
	PutSettings(ctx context.Context, s backup.Settings) error
}

// seedFanOut writes n environments (fanOutEnvironment) fanOutSeedWorkers at a time, and enables backups
// in their namespaces. It returns the keys of the eligible ones.
func seedFanOut(ctx context.Context, s seedStore, n int) (map[string]bool, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	now := time.Now().UTC()
	eligible := map[string]bool{}
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for range fanOutSeedWorkers {
		wg.Go(func() {
			for i := range next {
				if i < 0 { // a namespace's settings
					k := -i - 1
					set := backup.Settings{Namespace: fanOutNamespace(k), BackupsEnabled: true, UpdatedAt: now, UpdatedBy: UserID}
					if err := s.PutSettings(ctx, set); err != nil {
						cancel(err)
					}
					continue
				}
				e, ok := fanOutEnvironment(i, FanOutPerNamespace, "fanout.postgres.database.azure.com")
				e.EventTime, e.UpdatedAt = now, now
				_, _, err := s.UpdateEnvironment(ctx, e.Namespace, e.ID, func(backup.Environment, bool) (backup.Environment, bool, error) {
					return e, true, nil
				})
				if err != nil {
					cancel(err)
					continue
				}
				if ok {
					mu.Lock()
					eligible[backup.EnvironmentKey(e.Namespace, e.ID)] = true
					mu.Unlock()
				}
			}
		})
	}
	namespaces := (n + FanOutPerNamespace - 1) / FanOutPerNamespace
feed:
	for i := -namespaces; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return eligible, nil
}

// checkRunRecord verifies the day's schedule run: fanned out, with every eligible environment sent.
func checkRunRecord(ctx context.Context, s backup.ScheduleStore, day string, eligible int) error {
	run, err := s.GetScheduleRun(ctx, day)
	if err != nil {
		return fmt.Errorf("the schedule run of %s: %w", day, err)
	}
	if !run.FannedOut || run.Sent != eligible {
		return fmt.Errorf("the schedule run of %s: fanned out %v, sent %d; want true, %d", day, run.FannedOut, run.Sent, eligible)
	}
	return nil
}

// dropTables deletes every table whose name starts with prefix, so that the next measurement's
// Azurite holds what it held before this one.
func dropTables(ctx context.Context, connectionString, prefix string) error {
	svc, err := aztables.NewServiceClientFromConnectionString(connectionString, nil)
	if err != nil {
		return err
	}
	var names []string
	pager := svc.NewListTablesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list the fan-out's tables: %w", err)
		}
		for _, t := range page.Tables {
			if t.Name != nil && strings.HasPrefix(*t.Name, prefix) {
				names = append(names, *t.Name)
			}
		}
	}
	var errs []error
	for _, n := range names {
		if _, err := svc.DeleteTable(ctx, n, nil); err != nil {
			errs = append(errs, fmt.Errorf("delete table %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
