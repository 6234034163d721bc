package proc

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name      string
		writes    []string
		keep      int
		wantLines []string
		wantTail  string
	}{
		{"one line per write", []string{"a\n", "b\n"}, 5, []string{"a", "b"}, "a\nb"},
		{"line split across writes", []string{"hel", "lo\nwor", "ld\n"}, 5, []string{"hello", "world"}, "hello\nworld"},
		{"crlf trimmed", []string{"a\r\nb\r\n"}, 5, []string{"a", "b"}, "a\nb"},
		{"tail keeps the last lines", []string{"1\n2\n3\n4\n"}, 2, []string{"1", "2", "3", "4"}, "3\n4"},
		{"unterminated line in tail only", []string{"done\npart"}, 5, []string{"done"}, "done\npart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged bytes.Buffer
			var lines []string
			w := NewLineWriter(zerolog.New(&logged).Level(zerolog.DebugLevel), tt.keep, func(l string) {
				lines = append(lines, l)
			})
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("got Write %d, %v, want %d, nil", n, err, len(s))
				}
			}
			if strings.Join(lines, "|") != strings.Join(tt.wantLines, "|") {
				t.Errorf("got lines %q, want %q", lines, tt.wantLines)
			}
			if got := w.Tail(); got != tt.wantTail {
				t.Errorf("got tail %q, want %q", got, tt.wantTail)
			}
			if got := strings.Count(logged.String(), `"level":"debug"`); got != len(tt.wantLines) {
				t.Errorf("got %d debug log lines, want %d", got, len(tt.wantLines))
			}
		})
	}
}

func TestStop(t *testing.T) {
	tests := []struct {
		name   string
		script string
	}{
		{"exits on the polite signal", `echo ready; exec sleep 60`},
		{"ignores it and gets SIGKILL", `trap "" TERM; echo ready; while :; do sleep 1; done`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := make(chan struct{}, 1)
			out := NewLineWriter(zerolog.Nop(), 10, func(l string) {
				if l == "ready" {
					ready <- struct{}{}
				}
			})
			p, err := Start(exec.Command("sh", "-c", tt.script), out, nil)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-ready:
			case <-time.After(time.Minute):
				t.Fatal("child never said ready")
			}
			if exited, _ := p.Exited(); exited {
				t.Fatal("got exited before Stop, want running")
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := p.Stop(ctx, syscall.SIGTERM, 200*time.Millisecond); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if exited, _ := p.Exited(); !exited {
				t.Error("got running after Stop, want exited")
			}
			if err := syscall.Kill(p.Pid(), 0); err == nil {
				t.Errorf("pid %d still exists after Stop", p.Pid())
			}
			if err := p.Stop(ctx, syscall.SIGTERM, time.Second); err != nil {
				t.Errorf("second stop: got %v, want nil", err)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	_, err := Start(exec.Command("/nonexistent/binary"), NewLineWriter(zerolog.Nop(), 1, nil), nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/binary") {
		t.Errorf("got %v, want an error naming the binary", err)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if port <= 0 || port > 65535 {
		t.Errorf("got port %d, want 1..65535", port)
	}
}
