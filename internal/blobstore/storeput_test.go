package blobstore

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// storeObject reads an object back and its Content-MD5 as the store's listing shows it.
func storeObject(t *testing.T, s *Store, name string) ([]byte, []byte) {
	t.Helper()
	rc, _, err := s.OpenObject(t.Context(), testNS, testEnv, name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var listed []byte
	err = s.WalkObjects(t.Context(), testNS, testEnv, func(o backup.StoreObject) error {
		if o.Name == name {
			listed = o.MD5
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return data, listed
}

// TestStoreWritesObjects: both writers make an object with its bytes and its Content-MD5, never
// replace one, and tell an object that is there already with the same content from one with other
// content; Storage refuses bytes that do not match their MD5.
func TestStoreWritesObjects(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	small := pattern(3000)
	smallSum := md5.Sum(small)
	smallName := backup.ObjectName(backup.SourceFile{UUID: fileUUID(1), Size: int64(len(small)), MD5: smallSum[:]})

	t.Run("one Put Blob", func(t *testing.T) {
		existed, err := s.PutObject(ctx, testNS, testEnv, smallName, small, smallSum[:])
		if err != nil || existed {
			t.Fatalf("PutObject: existed %v, %v", existed, err)
		}
		if data, listed := storeObject(t, s, smallName); !bytes.Equal(data, small) || !bytes.Equal(listed, smallSum[:]) {
			t.Errorf("stored %d bytes with Content-MD5 %x, want %d bytes with %x", len(data), listed, len(small), smallSum)
		}
		existed, err = s.PutObject(ctx, testNS, testEnv, smallName, small, smallSum[:])
		if err != nil || !existed {
			t.Errorf("PutObject of an object there already: existed %v, %v", existed, err)
		}
		other := bytes.Repeat([]byte("x"), len(small))
		otherSum := md5.Sum(other)
		_, err = s.PutObject(ctx, testNS, testEnv, smallName, other, otherSum[:])
		if backup.CodeOf(err) != backup.CodeInternal || !strings.Contains(err.Error(), "there already with other content") {
			t.Errorf("PutObject over an object with other content: %v", err)
		}
		if data, _ := storeObject(t, s, smallName); !bytes.Equal(data, small) {
			t.Error("the object was replaced")
		}
	})

	t.Run("damaged on the way", func(t *testing.T) {
		name := backup.ObjectName(backup.SourceFile{UUID: fileUUID(2), Size: int64(len(small)), MD5: smallSum[:]})
		damaged := append([]byte("y"), small[1:]...)
		_, err := s.PutObject(ctx, testNS, testEnv, name, damaged, smallSum[:])
		if !checksumRefused(err) || backup.CodeOf(err) != backup.CodeTransient {
			t.Errorf("PutObject of bytes that do not match their MD5: %v, want a transient refusal", err)
		}
	})

	t.Run("blocks", func(t *testing.T) {
		parts := [][]byte{pattern(5000), bytes.Repeat([]byte("b"), 7000), []byte("end")}
		whole := bytes.Join(parts, nil)
		sum := md5.Sum(whole)
		name := fmt.Sprintf("%s/%d-etag-%032x", fileUUID(3), len(whole), 7)
		w, err := s.NewObjectBlocks(testNS, testEnv, name)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i, p := range parts {
			id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "u-%010d", i))
			ids = append(ids, id)
			if i == 1 { // a block damaged on the way is refused, then sent again
				if err := w.StageBlock(ctx, id, p[1:], md5.Sum(p)); !checksumRefused(err) {
					t.Errorf("a damaged block: %v, want it refused", err)
				}
			}
			if err := w.StageBlock(ctx, id, p, md5.Sum(p)); err != nil {
				t.Fatal(err)
			}
		}
		if existed, err := w.Commit(ctx, ids, int64(len(whole)), sum[:]); err != nil || existed {
			t.Fatalf("Commit: existed %v, %v", existed, err)
		}
		if data, listed := storeObject(t, s, name); !bytes.Equal(data, whole) || !bytes.Equal(listed, sum[:]) {
			t.Errorf("stored %d bytes with Content-MD5 %x, want %d bytes with %x", len(data), listed, len(whole), sum)
		}
		if existed, err := w.Commit(ctx, ids, int64(len(whole)), sum[:]); err != nil || !existed {
			t.Errorf("Commit of an object there already: existed %v, %v", existed, err)
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, name := range []string{".collector.json", fileUUID(4), fileUUID(4) + "/12-sha-00000000000000000000000000000000"} {
			if _, err := s.PutObject(ctx, testNS, testEnv, name, small, smallSum[:]); backup.CodeOf(err) != backup.CodeInternal {
				t.Errorf("PutObject %q: %v, want it refused", name, err)
			}
			if _, err := s.NewObjectBlocks(testNS, testEnv, name); backup.CodeOf(err) != backup.CodeInternal {
				t.Errorf("NewObjectBlocks %q: %v, want it refused", name, err)
			}
		}
		if _, err := s.PutObject(ctx, "NS", testEnv, smallName, small, smallSum[:]); err == nil {
			t.Error("a namespace that is not one was accepted")
		}
	})
}
