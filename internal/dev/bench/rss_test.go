package bench

import (
	"os"
	"strings"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name      string
		status    string
		rss, peak int64
		wantErr   string
	}{
		{"both", "Name:\thandler\nVmPeak:\t 1234 kB\nVmHWM:\t   91234 kB\nVmRSS:\t   80000 kB\nThreads:\t9\n", 80000 << 10, 91234 << 10, ""},
		{"missing peak", "Name:\thandler\nVmRSS:\t   80000 kB\n", 0, 0, "no VmRSS and VmHWM"},
		{"not a number", "VmHWM:\t   many kB\nVmRSS:\t 1 kB\n", 0, 0, "unexpected VmHWM"},
		{"other unit", "VmHWM:\t   1 MB\nVmRSS:\t 1 kB\n", 0, 0, "unexpected VmHWM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rss, peak, err := parseStatus(tt.status)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || rss != tt.rss || peak != tt.peak {
				t.Fatalf("got %d, %d, %v; want %d, %d", rss, peak, err, tt.rss, tt.peak)
			}
		})
	}
}

func TestResetAndReadOwnRSS(t *testing.T) {
	pid := os.Getpid()
	if err := ResetPeakRSS(pid); err != nil {
		t.Fatal(err)
	}
	rss, peak, err := ReadRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || peak < rss {
		t.Fatalf("rss %d, peak %d: want 0 < rss <= peak", rss, peak)
	}
	// A 64 MiB allocation, touched, raises the peak above its value after the reset.
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = byte(i)
	}
	_, after, err := ReadRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after < rss+32<<20 {
		t.Errorf("peak after touching 64 MiB: %d, want at least %d", after, rss+32<<20)
	}
	_ = b[len(b)-1]
}
