package blobstore

import (
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

const (
	testNS   = "ns-a"
	testEnv  = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	testSnap = "01a233b3-a5e1-7e4b-9f2c-07b45975067f"
)

// TestLayoutPaths: the paths the layout documents, byte for byte (they are read back by workers of
// other versions, and by operators).
func TestLayoutPaths(t *testing.T) {
	l := Layout{}
	snap := testNS + "/" + testEnv + "/" + testSnap + "/"
	obj := backup.ObjectName(backup.SourceFile{UUID: "5a1a0a4e-7d3c-4d8e-9f2c-000000000001", Size: 12, MD5: make([]byte, 16)})
	for got, want := range map[string]string{
		l.SnapshotArchive(testNS, testEnv, testSnap, 3):    snap + "attempt-03.tar.gz",
		l.SnapshotDump(testNS, testEnv, testSnap, 3):       snap + "attempt-03.db.backup.gz",
		l.SnapshotManifest(testNS, testEnv, testSnap, 3):   snap + "attempt-03.manifest.gz",
		l.SnapshotManifest(testNS, testEnv, testSnap, 123): snap + "attempt-123.manifest.gz",
		l.StoreObject(testNS, testEnv, obj):                testNS + "/" + testEnv + "/5a1a0a4e-7d3c-4d8e-9f2c-000000000001/12-md5-00000000000000000000000000000000",
		l.CollectorState(testNS, testEnv):                  testNS + "/" + testEnv + "/.collector.json",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

func TestParseSnapshotBlobInvertsTheLayout(t *testing.T) {
	l := Layout{}
	for _, p := range []string{
		l.SnapshotArchive(testNS, testEnv, testSnap, 12), l.SnapshotDump(testNS, testEnv, testSnap, 1),
		l.SnapshotManifest(testNS, testEnv, testSnap, 100),
	} {
		ns, env, snap, ok := l.ParseSnapshotBlob(p)
		if !ok || ns != testNS || env != testEnv || snap != testSnap {
			t.Errorf("%s: %q %q %q %v", p, ns, env, snap, ok)
		}
	}
	prefix := testNS + "/" + testEnv + "/" + testSnap + "/"
	for _, p := range []string{
		"", testNS + "/" + testEnv + "/" + testSnap, prefix + "notes.txt", "ns-a/x/" + testSnap + "/attempt-01.tar.gz",
		"NS/" + testEnv + "/" + testSnap + "/attempt-01.tar.gz", prefix + "deeper/attempt-01.tar.gz",
		prefix + "attempt-01.manifest", prefix + "attempt-01.db.backup", prefix + "attempt-01.gz", prefix + "attempt-.tar.gz",
		prefix + "attempt-1.tar.gz", prefix + "attempt-ab.manifest.gz", prefix + "attempt--1.db.backup.gz",
		prefix + "attempt-01.tar.gz.tmp", prefix + "xattempt-01.tar.gz",
		testNS + "/" + strings.ToUpper(testEnv) + "/" + testSnap + "/attempt-01.tar.gz",
		testNS + "/" + testEnv + "/" + strings.ToUpper(testSnap) + "/attempt-01.tar.gz",
		l.CollectorState(testNS, testEnv), l.StoreObject(testNS, testEnv, "5a1a0a4e-7d3c-4d8e-9f2c-000000000001/1-md5-00000000000000000000000000000000"),
	} {
		if _, _, _, ok := l.ParseSnapshotBlob(p); ok {
			t.Errorf("%q parsed as a snapshot's blob; the sweeper must never touch blobs the layout does not make", p)
		}
		if l.IsManifest(p) {
			t.Errorf("%q is taken for a manifest", p)
		}
	}
}

func TestIsManifest(t *testing.T) {
	l := Layout{}
	if !l.IsManifest(l.SnapshotManifest(testNS, testEnv, testSnap, 2)) {
		t.Errorf("a manifest is not recognised")
	}
	for _, p := range []string{l.SnapshotDump(testNS, testEnv, testSnap, 2), l.SnapshotArchive(testNS, testEnv, testSnap, 2),
		"ns-a/x/" + testSnap + "/attempt-01.manifest.gz"} {
		if l.IsManifest(p) {
			t.Errorf("%s is taken for a manifest", p)
		}
	}
}

func TestDescribeNamesBlobsWithoutTheirPaths(t *testing.T) {
	l := Layout{}
	for p, want := range map[string]string{
		l.SnapshotArchive(testNS, testEnv, testSnap, 1):  "the archive",
		l.SnapshotDump(testNS, testEnv, testSnap, 1):     "the snapshot's database dump",
		l.SnapshotManifest(testNS, testEnv, testSnap, 1): "the snapshot's manifest",
		"ns/e/s/attempt-01.tar.gz":                       "the archive",
	} {
		if got := describe(p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
}
