package backup

import "time"

// ScheduleRun is the schedule's run of one calendar day: the fan-out of one automatic-backup message
// per eligible environment, made by whichever timer fires first that day. It is the fan-out's durable
// state: a second timer the same day finds it and makes nothing; a fan-out that died half-way is
// resumed by recovery from Cursor; and once the spread window has passed, recovery checks every
// eligible environment once (Checked) and sends again what was lost.
type ScheduleRun struct {
	Day     string       // 2006-01-02 in SCHEDULE_TIME_ZONE; the key
	Kind    SnapshotKind // the day's kind: nightly, weekly or monthly
	Trigger string       // the timer function that started the run
	// StartedAt is when the fan-out started: each environment's message is scheduled at StartedAt plus
	// its offset in the Spread window, so a resumed fan-out schedules the same times.
	StartedAt time.Time
	Spread    time.Duration
	// Cursor is the EnvironmentKey of the last environment whose message was sent; Sent counts the
	// messages sent.
	Cursor string
	Sent   int
	// FannedOut is set once every environment's message was sent; Checked once recovery's check after
	// the window has run; Resent counts the messages that check sent again.
	FannedOut   bool
	FannedOutAt time.Time
	Checked     bool
	CheckedAt   time.Time
	Resent      int
	UpdatedAt   time.Time
}
