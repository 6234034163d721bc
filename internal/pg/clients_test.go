package pg

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

func TestParseClients(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"15=/usr/lib/postgresql/15/bin", "15=/usr/lib/postgresql/15/bin", ""},
		{"17=/b,15=/a", "15=/a,17=/b", ""}, // sorted by major
		{" 15 = /a , 17=/b ,", "15=/a,17=/b", ""},
		{"12=/a,30=/b", "12=/a,30=/b", ""},
		{"", "", "lists no client programs"},
		{" , ", "", "lists no client programs"},
		{"/usr/lib/postgresql/15/bin", "", "is not <major>=<directory>"},
		{"15=", "", "is not <major>=<directory>"},
		{"fifteen=/a", "", `the major version "fifteen" is not a whole number from 12 to 30`},
		{"11=/a", "", "from 12 to 30"},
		{"31=/a", "", "from 12 to 30"},
		{"15.4=/a", "", "not a whole number"},
		{"15=/a,15=/b", "", "PostgreSQL 15 appears twice (/a and /b)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseClients(tt.in)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
			case err != nil || got.String() != tt.want:
				t.Errorf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
	if cs, err := ParseClients(DefaultClients); err != nil || len(cs) != 1 || cs[0].Major != 15 {
		t.Errorf("DefaultClients: %v, %v", cs, err)
	}
}

func clients(t *testing.T, s string) Clients {
	t.Helper()
	cs, err := ParseClients(s)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestForDump(t *testing.T) {
	both := clients(t, "15=/pg15,17=/pg17")
	only15 := clients(t, "15=/pg15")
	tests := []struct {
		name    string
		cs      Clients
		server  int
		want    int
		wantErr string
	}{
		{"9.6 on 15 and 17", both, 9, 15, ""},
		{"12 on 15 and 17", both, 12, 15, ""},
		{"15 on 15 and 17", both, 15, 15, ""},
		{"16 on 15 and 17", both, 16, 17, ""},
		{"17 on 15 and 17", both, 17, 17, ""},
		{"18 on 15 and 17", both, 18, 0,
			"the database server runs PostgreSQL 18, and this service has pg_dump for PostgreSQL 15 and 17 only; ask its operator to add PostgreSQL 18's client tools (PG_BIN_DIRS)"},
		{"15 on 15", only15, 15, 15, ""},
		{"16 on 15", only15, 16, 0,
			"the database server runs PostgreSQL 16, and this service has pg_dump for PostgreSQL 15 only; ask its operator to add PostgreSQL 16's client tools (PG_BIN_DIRS)"},
		{"17 on 15", only15, 17, 0, "runs PostgreSQL 17, and this service has pg_dump for PostgreSQL 15 only"},
		{"17 on 14, 15 and 16", clients(t, "16=/c,14=/a,15=/b"), 17, 0, "has pg_dump for PostgreSQL 14, 15 and 16 only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cs.ForDump(tt.server)
			checkChoice(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestForRestore(t *testing.T) {
	both := clients(t, "15=/pg15,17=/pg17")
	only15 := clients(t, "15=/pg15")
	tests := []struct {
		name    string
		cs      Clients
		server  int
		archive string
		want    int
		wantErr string
	}{
		{"1.14 into 15", both, 15, "1.14", 15, ""},
		{"1.14 into 12", both, 12, "1.14", 15, ""},
		{"1.14 into 16", both, 16, "1.14", 17, ""},
		{"1.14 into 17", both, 17, "1.14", 17, ""},
		{"1.12 into 15", both, 15, "1.12", 15, ""},
		{"1.15 into 15", both, 15, "1.15", 17, ""},
		{"1.16 into 15", both, 15, "1.16", 17, ""},
		{"1.16.0 into 17", both, 17, "1.16.0", 17, ""},
		{"unknown header into 15", both, 15, "", 15, ""},
		{"1.17 into 17", both, 17, "1.17", 0,
			"the database dump is of archive version 1.17 (a pg_dump this service does not know), and this service has pg_restore for PostgreSQL 15 and 17 only, which cannot read it; ask its operator to add PostgreSQL 18's client tools (PG_BIN_DIRS)"},
		{"1.14 into 18", both, 18, "1.14", 0,
			"the target database server runs PostgreSQL 18, and this service has pg_restore for PostgreSQL 15 and 17 only; ask its operator to add PostgreSQL 18's client tools (PG_BIN_DIRS)"},
		{"1.16 into 15, only 15", only15, 15, "1.16", 0,
			"the database dump is of archive version 1.16 (pg_dump 17 or later), and this service has pg_restore for PostgreSQL 15 only, which cannot read it; ask its operator to add PostgreSQL 17's client tools (PG_BIN_DIRS)"},
		{"1.14 into 17, only 15", only15, 17, "1.14", 0, "the target database server runs PostgreSQL 17"},
		{"1.15 into 15 on 15 and 16", clients(t, "15=/a,16=/b"), 15, "1.15", 16, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cs.ForRestore(tt.server, tt.archive)
			checkChoice(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestForList(t *testing.T) {
	both := clients(t, "15=/pg15,17=/pg17")
	for archive, want := range map[string]int{"1.14": 15, "1.13": 15, "": 15, "1.15": 17, "1.16": 17, "1.17": 17, "2.0": 17} {
		if got := both.ForList(archive); got.Major != want {
			t.Errorf("archive %q: got pg_restore %d, want %d", archive, got.Major, want)
		}
	}
	if got := clients(t, "15=/pg15").ForList("1.16"); got.Major != 15 {
		t.Errorf("only 15: got %d, want 15 (whose refusal explains itself)", got.Major)
	}
}

// checkChoice checks a chosen client's major, or a permanent refusal with that message and
// ErrNoClient kept for noFit.
func checkChoice(t *testing.T, got Client, err error, want int, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil || got.Major != want {
			t.Errorf("got %v, %v; want PostgreSQL %d", got, err, want)
		}
		return
	}
	var be *backup.Error
	if !errors.As(err, &be) || !strings.Contains(be.Message, wantErr) {
		t.Fatalf("got %v; want a message containing %q", err, wantErr)
	}
	if be.Code != backup.CodeInvalidState || backup.IsRetryable(err) {
		t.Errorf("got code %s, want %s, which is not retried", be.Code, backup.CodeInvalidState)
	}
	wrapped := noFit(err, "detail for the log")
	if !errors.Is(wrapped, ErrNoClient) || backup.CodeOf(wrapped) != backup.CodeInvalidState ||
		!strings.Contains(wrapped.Error(), "detail for the log") {
		t.Errorf("noFit: got %v", wrapped)
	}
	var wbe *backup.Error
	if errors.As(wrapped, &wbe) && wbe.Message != be.Message {
		t.Errorf("noFit changed the message to %q", wbe.Message)
	}
}

func TestServerMajor(t *testing.T) {
	for num, want := range map[int]int{90624: 9, 120020: 12, 150018: 15, 160004: 16, 170010: 17, 180000: 18} {
		if got := serverMajor(num); got != want {
			t.Errorf("serverMajor(%d) = %d, want %d", num, got, want)
		}
	}
}

func TestMendixWarning(t *testing.T) {
	header := func(minor byte) []byte { return []byte{'P', 'G', 'D', 'M', 'P', 1, minor, 0} }
	for _, tt := range []struct {
		head []byte
		want string
	}{
		{header(14), ""},
		{header(12), ""},
		{nil, ""}, // the header has not streamed past
		{header(15), "archive version 1.15"},
		{header(16), "the dump was made by pg_dump 17 (archive version 1.16) because the database server runs PostgreSQL 17: " +
			"Mendix Cloud may refuse to import it, as it accepts archive version 1.14 (pg_dump 15 and earlier)"},
	} {
		d := &Dump{head: tt.head, client: Client{Major: 17, Dir: "/pg17"}, serverVersion: "17.10 (Debian 17.10-1)"}
		got := d.MendixWarning()
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("header %v: got %q, want %q", tt.head, got, tt.want)
		}
		if len(got) > 256 {
			t.Errorf("got %d bytes, more than a snapshot's warning keeps", len(got))
		}
	}
}

// fakeClient writes pg_dump (printing version) and pg_restore scripts into a new directory.
func fakeClient(t *testing.T, version string) string {
	t.Helper()
	dir := fakePgDump(t, `echo "pg_dump (PostgreSQL) `+version+`"`)
	if err := os.WriteFile(filepath.Join(dir, "pg_restore"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestClientsCheck(t *testing.T) {
	ctx := t.Context()
	d15, d17 := fakeClient(t, "15.18"), fakeClient(t, "17.10 (Debian 17.10-1.pgdg120+1)")
	noRestore := fakePgDump(t, `echo "pg_dump (PostgreSQL) 15.2"`)
	notExec := fakeClient(t, "15.2")
	if err := os.Chmod(filepath.Join(notExec, "pg_restore"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cs      Clients
		wantErr string
	}{
		{"15 and 17", Clients{{15, d15}, {17, d17}}, ""},
		{"the real 15", Clients{{15, realBinDir}}, ""},
		{"no directory", Clients{{15, filepath.Join(t.TempDir(), "none")}}, "PostgreSQL 15: stat"},
		{"no pg_restore", Clients{{15, noRestore}}, "pg_restore: no such file"},
		{"pg_restore not executable", Clients{{15, notExec}}, "is not an executable file"},
		{"another major", Clients{{15, d17}}, "pg_dump is version 17.10, not 15"},
		{"both wrong", Clients{{15, d17}, {17, d15}}, "version 15.18, not 17"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cs.Check(ctx)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}
