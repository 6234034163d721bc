package bench

import (
	"fmt"
)

// TransferReport is the upload accepted and the download made through the API (nil when not measured).
type TransferReport struct {
	Upload   *UploadResult
	Download *DownloadResult
}

// renderTransfers writes the rows of the upload (against gzip -dc | tar -t of the same archive) and of
// the download (against tar czf of the same content, the Assembly's reference).
func (r Report) renderTransfers(row func(label, naive, service, rat, target, verdict string)) {
	if u := r.Transfers.Upload; u != nil {
		w, b := u.Wall.Seconds(), u.Baseline.Seconds()
		row(fmt.Sprintf("6. accept a %s upload vs gzip -dc | tar -t", mb(float64(u.Archive.Bytes))), secs(b), secs(w),
			fmt.Sprintf("%.2f", ratio(w, b)), fmt.Sprintf("<= %.1f", UploadTimeTarget), verdict(ratio(w, b) <= UploadTimeTarget, b > 0))
		row("   files stored = files in the archive", fmt.Sprint(u.Archive.Files), fmt.Sprint(u.FilesCount), "", "equal",
			verdict(u.FilesCount == u.Archive.Files && u.Entries == u.Archive.Files+2, true))
		row("   peak RSS of the handler, upload", "-", mib(float64(u.PeakRSS)), "", fmt.Sprintf("< %s", mib(RSSLimit)), verdict(u.PeakRSS < RSSLimit, true))
	}
	if d := r.Transfers.Download; d != nil {
		ref := r.Reference.Tar.Seconds()
		naive, rat := "-", ""
		if ref > 0 {
			naive, rat = secs(ref), fmt.Sprintf("%.2f", ratio(d.Wall.Seconds(), ref))
		}
		row("7. download through the API vs tar czf", naive, secs(d.Wall.Seconds()), rat, "(none)", "")
		row("   peak RSS of the handler, download", "-", mib(float64(d.PeakRSS)), "", fmt.Sprintf("< %s", mib(RSSLimit)), verdict(d.PeakRSS < RSSLimit, true))
	}
}

// renderTransferDetails writes what the transfer rows stand on.
func (r Report) renderTransferDetails(p func(string, ...any)) {
	if u := r.Transfers.Upload; u != nil {
		a := u.Archive
		p("  upload: %s archive (a pg_dump -Fc of %s and %d files of %s, 256 KiB to 4 MiB); put through its link in %s; validated and stored in %s; gzip -dc | tar -t %s (%d entries)",
			mb(float64(a.Bytes)), mb(float64(a.DumpBytes)), a.Files, mb(float64(a.FilesBytes)), secs(u.Transfer.Seconds()),
			secs(u.Wall.Seconds()), secs(u.Baseline.Seconds()), u.Entries)
	}
	if d := r.Transfers.Download; d != nil {
		p("  download: snapshot %s, %s archive in %s (the job, its read-back and the polls included)", d.SnapshotID, mb(float64(d.SizeBytes)), secs(d.Wall.Seconds()))
	}
}
