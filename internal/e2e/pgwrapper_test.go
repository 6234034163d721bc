package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The handler runs pg_dump from PG_BIN_DIR. In these tests that is a folder whose pg_dump is a
// wrapper around the real one, steered by a control file, so tests can make a dump fail half-way or
// stall (to kill the handler while it works).
const wrapperScript = `#!/bin/bash
real="%s"
control="%s"
case "$1" in --version) exec "$real/pg_dump" "$@";; esac
mode=$(cat "$control" 2>/dev/null || echo normal)
case "$mode" in
  fail-half)
    "$real/pg_dump" "$@" | head -c 30000
    echo "pg_dump: error: simulated failure half-way through the dump" >&2
    exit 1;;
  stall-once)
    echo normal > "$control"
    "$real/pg_dump" "$@" | { head -c 30000; sleep 60; }
    exit 1;;
  *)
    exec "$real/pg_dump" "$@";;
esac
`

// restoreWrapperScript is pg_restore's wrapper, steered by its own control file: stall-once (and stall,
// every time) feed the real pg_restore the first 64 KiB of the dump and then hold the rest, so a test
// can kill the handler while pg_restore works.
const restoreWrapperScript = `#!/bin/bash
real="%s"
control="%s-restore"
case "$1" in --version) exec "$real/pg_restore" "$@";; esac
mode=$(cat "$control" 2>/dev/null || echo normal)
case "$mode" in
  stall-once|stall)
    [ "$mode" = stall-once ] && echo normal > "$control"
    echo started >> "$control.log"
    { head -c 65536; sleep 120; } | "$real/pg_restore" "$@"
    exit 1;;
  *)
    exec "$real/pg_restore" "$@";;
esac
`

// pgWrapper creates the wrapper folder and returns it and its control file.
func pgWrapper(realBinDir string) (dir, control string, err error) {
	dir, err = os.MkdirTemp("", "pgwrap-")
	if err != nil {
		return "", "", err
	}
	control = filepath.Join(dir, "mode")
	script := []byte(sprintf(wrapperScript, realBinDir, control))
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), script, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "pg_restore"), []byte(sprintf(restoreWrapperScript, realBinDir, control)), 0o755); err != nil {
		return "", "", err
	}
	for _, tool := range []string{"psql"} {
		if err := os.Symlink(filepath.Join(realBinDir, tool), filepath.Join(dir, tool)); err != nil {
			return "", "", err
		}
	}
	if err := os.WriteFile(control+"-restore", []byte("normal\n"), 0o644); err != nil {
		return "", "", err
	}
	return dir, control, os.WriteFile(control, []byte("normal\n"), 0o644)
}

// setDumpMode steers the wrapper; the test restores normal mode when it ends.
func setDumpMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(dumpControl, []byte(mode+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(dumpControl, []byte("normal\n"), 0o644) })
}

// setRestoreMode steers the pg_restore wrapper; the test restores normal mode when it ends. It
// returns how many pg_restore runs the wrapper had started before.
func setRestoreMode(t *testing.T, mode string) int {
	t.Helper()
	if err := os.WriteFile(restoreControl, []byte(mode+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(restoreControl, []byte("normal\n"), 0o644) })
	return restoreStarts(t)
}

// restoreStarts counts the pg_restore runs the wrapper stalled so far.
func restoreStarts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(restoreControl + ".log")
	if os.IsNotExist(err) {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "started")
}
