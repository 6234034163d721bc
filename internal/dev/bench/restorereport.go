package bench

import (
	"fmt"
	"time"
)

func naiveRestoreWall(r NaiveRestoreResult) time.Duration { return r.Total }

// renderRestore writes the restore's rows: the wall time against the naive restore's median, what
// the restore restored, the handler's peak RSS, and where both spent their time.
func (r Report) renderRestore(row func(label, naive, service, rat, target, verdict string)) {
	rs := r.Restore
	if rs.Service == nil && len(rs.Naive) == 0 {
		return
	}
	runs := len(rs.Naive)
	haveNaive := runs > 0
	med := func(f func(NaiveRestoreResult) time.Duration) string {
		if !haveNaive {
			return "-"
		}
		return secs(Median(seconds(rs.Naive, f)))
	}
	nWall := Median(seconds(rs.Naive, naiveRestoreWall))
	label := fmt.Sprintf("5. restore of the first snapshot (naive: %d runs)", runs)
	if runs == 1 {
		label = "5. restore of the first snapshot (naive: 1 run)"
	}
	svc := rs.Service
	if svc == nil {
		row(label, med(naiveRestoreWall), "-", "", fmt.Sprintf("<= %.2f", RestoreTimeTarget), verdict(false, false))
	} else {
		w := svc.Wall.Seconds()
		rat := ""
		if haveNaive {
			rat = fmt.Sprintf("%.2f", ratio(w, nWall))
		}
		row(label, med(naiveRestoreWall), secs(w), rat, fmt.Sprintf("<= %.2f", RestoreTimeTarget),
			verdict(ratio(w, nWall) <= RestoreTimeTarget, haveNaive))
		row("   rows restored", "-", fmt.Sprint(svc.Rows), "", "> 0", verdict(svc.Rows > 0, true))
		row("   files_added = the snapshot's files_count", "-", fmt.Sprint(svc.FilesAdded), "",
			fmt.Sprintf("= %d", svc.SnapshotFiles), verdict(svc.FilesAdded == svc.SnapshotFiles, true))
		row("   peak RSS of the handler during the restore", "-", mib(float64(svc.PeakRSS)), "",
			fmt.Sprintf("< %s", mib(RSSLimit)), verdict(svc.PeakRSS < RSSLimit, true))
	}
	// Where the time went: the naive restore's steps (medians) one after the other; the service's
	// database and files at the same time, as moments from its worker's start.
	at := func(ok bool, d time.Duration) string {
		if !ok {
			return "-"
		}
		return "at " + secs(d.Seconds())
	}
	ph := RestorePhases{}
	havePhases := svc != nil && svc.Phases != nil
	if havePhases {
		ph = *svc.Phases
	}
	row("   download of the naive archive", med(func(n NaiveRestoreResult) time.Duration { return n.Download }), "-", "", "", "")
	row("   tar xzf of it", med(func(n NaiveRestoreResult) time.Duration { return n.Extract }), "-", "", "", "")
	row("   database (pg_restore; service: done at)", med(func(n NaiveRestoreResult) time.Duration { return n.PgRestore }),
		at(havePhases, ph.DatabaseDone), "", "", "")
	row(fmt.Sprintf("   files, %d at a time (service: copies, done at)", RestoreFileWorkers),
		med(func(n NaiveRestoreResult) time.Duration { return n.Upload }), at(havePhases, ph.FilesDone), "", "", "")
	if svc == nil {
		return
	}
	if havePhases {
		row("   service: both verified", "-", at(true, ph.Verified), "", "", "")
	}
	if svc.Queued > 0 {
		row("   service: queued before its worker started", "-", secs(svc.Queued.Seconds()), "", "", "")
	}
	if havePhases && svc.Queued > 0 && svc.Wall > svc.Queued+ph.Verified {
		row("   service: the rest (staging db, swap, polls)", "-", secs((svc.Wall - svc.Queued - ph.Verified).Seconds()), "", "", "")
	}
}

// renderRestoreDetails writes one line per naive restore run and one for the service's restore.
func (r Report) renderRestoreDetails(p func(string, ...any)) {
	rs := r.Restore
	for k, n := range rs.Naive {
		p("  naive restore run %d: download of the archive %s (%s), tar xzf %s, pg_restore -j2 --no-owner --no-acl %s, upload %d files (%s, %d at a time) %s; total %s",
			k+1, secs(n.Download.Seconds()), mb(float64(n.ArchiveBytes)), secs(n.Extract.Seconds()), secs(n.PgRestore.Seconds()),
			n.Files, mb(float64(n.FilesBytes)), n.Workers, secs(n.Upload.Seconds()), secs(n.Total.Seconds()))
	}
	if s := rs.Service; s != nil {
		p("  restore %s of snapshot %s: %s", s.RestoreID, s.SnapshotID, restoreText(*s))
	}
}

// restoreText is the service's restore's details line.
func restoreText(s RestoreResult) string {
	out := fmt.Sprintf("%s, %d tables, %d rows, dump %s; files %d added, %d replaced, %d unchanged (the snapshot has %d); peak RSS %s (at start %s)",
		secs(s.Wall.Seconds()), s.Tables, s.Rows, mb(float64(s.DatabaseBytes)), s.FilesAdded, s.FilesReplaced, s.FilesKept,
		s.SnapshotFiles, mib(float64(s.PeakRSS)), mib(float64(s.StartRSS)))
	if s.Worker > 0 {
		out += fmt.Sprintf("; queued %s, worker %s (the record's times)", secs(s.Queued.Seconds()), secs(s.Worker.Seconds()))
	}
	if ph := s.Phases; ph != nil {
		out += fmt.Sprintf("; database done at %s, files at %s, verified at %s (the handler's restore verified line)",
			secs(ph.DatabaseDone.Seconds()), secs(ph.FilesDone.Seconds()), secs(ph.Verified.Seconds()))
	}
	return out
}
