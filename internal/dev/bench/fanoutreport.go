package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Column layout of the fan-out table: label, time, of it waiting for Table Storage, Table calls (per
// environment), Publish calls, messages, Service Bus batches; its comparison rows: label, value,
// ratio, target, verdict.
const (
	fanOutHead    = "%-58s %-9s %-11s %-17s %-8s %-9s %s"
	fanOutRow     = "  %-56s %-9s %-11s %-17s %-8s %-9s %s"
	fanOutCompare = "  %-56s %-21s %-8s %-9s %s"
)

// RenderFanOut writes the fan-out benchmark alone (bench -fanout-only): a title and its rows.
func (r Report) RenderFanOut(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("Fan-out benchmark, %s, %d CPUs; total run %s", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.CPUs, r.Total.Round(time.Second))
	r.renderFanOut(p)
}

// renderFanOut writes the fan-out's rows: each size's time (median of its runs), Table Storage calls,
// Publish calls, messages and estimated Service Bus batches; then the largest size against the
// smallest (time and calls) and the largest's slowest run against the Consumption plan's timeout.
func (r Report) renderFanOut(p func(string, ...any)) {
	runs := r.FanOut.Runs
	if len(runs) == 0 {
		return
	}
	p("")
	p(fanOutHead, fmt.Sprintf("fan-out of a day's automatic backups, median of %d runs", len(runs[0].Walls)), "time", "Table wait",
		"Table calls", "Publish", "messages", "Service Bus batches")
	p(fanOutHead, "(RunSchedule over every environment, Azurite)", "", "", "(per env)", "calls", "", "(est., Standard)")
	for _, f := range runs {
		p(fanOutRow, fmt.Sprintf("%s environments (%d namespaces, %s eligible)", thousands(f.Environments), f.Namespaces, thousands(f.Eligible)),
			fineSecs(f.Wall()), fineSecs(f.Wait()), fmt.Sprintf("%d (%.4f)", f.Table.Total(), ratio(float64(f.Table.Total()), float64(f.Environments))),
			strconv.Itoa(f.Publish.Calls), thousands(f.Publish.Messages), strconv.Itoa(f.Publish.Batches))
	}
	if len(runs) >= 2 {
		small, large := runs[0], runs[len(runs)-1]
		grow := ratio(float64(large.Environments), float64(small.Environments))
		target := FanOutLinearTarget * grow / 10 // 12 for 10 times the environments
		name := fmt.Sprintf("%s vs %s environments", thousands(large.Environments), thousands(small.Environments))
		tr := ratio(large.Wall().Seconds(), small.Wall().Seconds())
		p(fanOutCompare, name+": time", fmt.Sprintf("%s vs %s", fineSecs(large.Wall()), fineSecs(small.Wall())),
			fmt.Sprintf("%.2f", tr), fmt.Sprintf("<= %.1f", target), verdict(tr <= target, small.Wall() > 0))
		cr := ratio(float64(large.Table.Total()), float64(small.Table.Total()))
		p(fanOutCompare, name+": Table calls", fmt.Sprintf("%d vs %d", large.Table.Total(), small.Table.Total()),
			fmt.Sprintf("%.2f", cr), fmt.Sprintf("<= %.1f", target), verdict(cr <= target, small.Table.Total() > 0))
		pr := ratio(float64(large.Publish.Calls), float64(small.Publish.Calls))
		p(fanOutCompare, name+": Publish calls", fmt.Sprintf("%d vs %d", large.Publish.Calls, small.Publish.Calls),
			fmt.Sprintf("%.2f", pr), fmt.Sprintf("<= %.1f", target), verdict(pr <= target, small.Publish.Calls > 0))
	}
	large := runs[len(runs)-1]
	if len(large.Walls) > 0 {
		slowest := slices.Max(large.Walls)
		p(fanOutCompare, fmt.Sprintf("%s environments, slowest run, vs Consumption's limit", thousands(large.Environments)),
			fmt.Sprintf("%s of %s", fineSecs(slowest), wholeUnits(ConsumptionTimeout)), fmt.Sprintf("%.4f", ratio(slowest.Seconds(), ConsumptionTimeout.Seconds())),
			fmt.Sprintf("< %s", wholeUnits(ConsumptionTimeout)), verdict(slowest < ConsumptionTimeout, true))
	}
	for _, f := range runs {
		walls := make([]string, len(f.Walls))
		for i, w := range f.Walls {
			walls[i] = fineSecs(w)
			if i < len(f.Waits) {
				walls[i] += fmt.Sprintf(" (Table %s)", fineSecs(f.Waits[i]))
			}
		}
		p("  %s environments: seeded in %s (untimed); after an untimed run, %d runs, each for another day: %s; Table calls per run: %s; Publish per run: %d calls, %s messages, %s (est.), %d Service Bus batches of at most 256 KiB (Standard tier)",
			thousands(f.Environments), secs(f.Seed.Seconds()), len(f.Walls), strings.Join(walls, ", "), f.Table.Text(), f.Publish.Calls,
			thousands(f.Publish.Messages), mb(float64(f.Publish.Bytes)), f.Publish.Batches)
	}
	p("  each run checked: one message per eligible environment, every MessageId unique, scheduled within the spread; the run recorded as fanned out with that count")
	p("  (the time is the service's and Azurite's: nothing is sent to Service Bus; the Functions timeout is %s in host.json, %s on Consumption)",
		wholeUnits(FunctionTimeout), wholeUnits(ConsumptionTimeout))
}

// fineSecs writes a short duration to the millisecond: 0.081 s.
func fineSecs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// wholeUnits writes a duration of whole hours or minutes as "12 h" or "10 min".
func wholeUnits(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return secs(d.Seconds())
}

// thousands writes n with commas between groups of three digits: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
