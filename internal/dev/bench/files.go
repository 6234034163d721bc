// Package bench owns the backup performance benchmark behind `make bench`: the deterministic reference
// dataset (a Mendix-like PostgreSQL database and its file documents in Blob Storage, and the changes
// made to the files between nightly backups), the naive baseline pipeline (pg_dump -Fc, download, tar
// czf, upload), the measurement of the service's own incremental backups through its HTTP API on a
// local stack (wall time, the files copied, the bytes stored as listed in Storage, the handler's peak
// RSS), the download archive assembled on demand against `tar czf` of the same content, a restore
// through the API against the naive restore (download, tar xzf, pg_restore, upload), the
// snapshot-listing latency, and the report that compares them with the targets.
//
// Everything generated is a pure function of fixed seeds: the database through SQL expressions over
// generate_series (md5 and hashint8 of the row number), the files and their changes through seeded PCG
// generators, so two runs measure the same bytes.
package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/google/uuid"
)

// fileSeed is the PCG seed of every file's size and content; the file's index is the stream.
const fileSeed = 0x6d656e646978 // "mendix"

// File sizes: uniform in [minFileSize, maxFileSize], 20,000 bytes on average.
const (
	minFileSize = 12_000
	maxFileSize = 28_000
)

// File is one file document of the reference dataset: a system$filedocument row and its blob.
type File struct {
	ID   int64  // system$filedocument.id
	UUID string // __uuid__, also the blob name
	Name string // the user's file name
	Size int    // bytes
	// Text marks a text-like file (compresses about 3:1); the others are already-compressed-like bytes
	// (a photo, a PDF with compressed streams) that gzip cannot shrink.
	Text bool
	// Rev counts the times the file was changed (Change): each revision has other bytes of the same
	// size and kind. Files makes revision 0.
	Rev int
}

// Files returns the n file documents of the dataset, the same for every call.
func Files(n int) []File {
	out := make([]File, n)
	for i := range out {
		rng := rand.New(rand.NewPCG(fileSeed, uint64(i)))
		f := File{
			ID:   int64(i + 1),
			UUID: uuid.NewSHA1(uuid.NameSpaceOID, []byte("bench-file-"+strconv.Itoa(i))).String(),
			Size: minFileSize + rng.IntN(maxFileSize-minFileSize+1),
			Text: i%2 == 0,
		}
		if f.Text {
			f.Name = fmt.Sprintf("%s-notes-%06d.txt", words[rng.IntN(len(words))], i)
		} else {
			f.Name = fmt.Sprintf("scan-%s-%06d.jpg", words[rng.IntN(len(words))], i)
		}
		out[i] = f
	}
	return out
}

// Content returns the file's bytes, a pure function of its ID and revision.
func (f File) Content() []byte {
	rng := rand.New(rand.NewPCG(fileSeed^0x5eed^uint64(f.Rev)<<40, uint64(f.ID)))
	if !f.Text {
		b := make([]byte, f.Size)
		for i := 0; i+8 <= len(b); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		for i := len(b) &^ 7; i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var buf bytes.Buffer
	buf.Grow(f.Size + 128)
	for line := 1; buf.Len() < f.Size; line++ {
		fmt.Fprintf(&buf, "%04d %s", line, words[rng.IntN(len(words))])
		for range 4 + rng.IntN(10) {
			buf.WriteByte(' ')
			buf.WriteString(words[rng.IntN(len(words))])
		}
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&buf, " %d.%02d EUR", rng.IntN(100000), rng.IntN(100))
		}
		buf.WriteString(".\n")
	}
	return buf.Bytes()[:f.Size]
}

// changeSeed is the PCG seed of the choice of the files changed before each nightly backup.
const changeSeed = 0x6e696768746c79 // "nightly"

// ChangeSet returns the indexes of the count files, of n, that change before nightly backup night:
// distinct, in increasing order, a pure function of its arguments. Files changed one night may change
// again another.
func ChangeSet(n, count, night int) []int {
	count = min(max(count, 0), n)
	rng := rand.New(rand.NewPCG(changeSeed, uint64(night)))
	// A partial Fisher-Yates shuffle over a sparse permutation: count swaps, no n-sized table.
	swapped := map[int]int{}
	at := func(i int) int {
		if v, ok := swapped[i]; ok {
			return v
		}
		return i
	}
	out := make([]int, count)
	for i := range count {
		j := i + rng.IntN(n-i)
		out[i] = at(j)
		swapped[j] = at(i)
	}
	slices.Sort(out)
	return out
}

// Change gives the files at idx their next revision (other bytes, the same size and kind) and returns
// them as they are now.
func Change(files []File, idx []int) []File {
	out := make([]File, len(idx))
	for k, i := range idx {
		files[i].Rev++
		out[k] = files[i]
	}
	return out
}

// TotalSize is the sum of the files' sizes.
func TotalSize(files []File) int64 {
	var n int64
	for _, f := range files {
		n += int64(f.Size)
	}
	return n
}

// UploadFiles creates container (if needed) and uploads every file's content as blob <uuid>, workers
// at a time. It stops at the first error.
func UploadFiles(ctx context.Context, client *azblob.Client, container string, files []File, workers int) error {
	if _, err := client.CreateContainer(ctx, container, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create container %s: %w", container, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) || ctx.Err() != nil {
					return
				}
				if _, err := client.UploadBuffer(ctx, container, files[i].UUID, files[i].Content(), nil); err != nil {
					cancel(fmt.Errorf("upload file %s: %w", files[i].UUID, err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
