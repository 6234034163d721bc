package archive

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"time"
)

// Names of the entries of a snapshot archive.
const (
	MetadataName = ".metadata"
	DumpName     = "db/db.backup"
	treeDir      = "tree/"
)

const blockSize = 512 // tar record size

// zeroBlocks is the end-of-archive marker: two zero records. Its first 511 bytes also serve as padding.
var zeroBlocks [2 * blockSize]byte

// Metadata is the .metadata entry, every value a string as Mendix writes it (docs/archive-format.md).
type Metadata struct {
	Duration     string `json:"duration"`     // seconds the snapshot took
	DumpSize     string `json:"dumpSize"`     // bytes of db/db.backup
	ModelVersion string `json:"modelVersion"` // the environment's model version at snapshot time
	DatabaseSize string `json:"databaseSize"` // bytes of the live database (pg_database_size)
	FilesSize    string `json:"filesSize"`    // total bytes under tree/
}

// TreeName is the archive path of the file document uuid, in the nested form this package writes:
// tree/<u[0:2]>/<u[2:4]>/<u>. uuid must be canonical (see backup.CanonicalUUID).
func TreeName(uuid string) string {
	return treeDir + uuid[0:2] + "/" + uuid[2:4] + "/" + uuid
}

// tarHeader returns the tar header bytes of a regular file, as archive/tar writes them: USTAR when it
// fits, PAX records otherwise (sizes of 8 GiB and more, long names).
func tarHeader(name string, size int64, modTime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  modTime.Truncate(time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("tar header %s: %w", name, err)
	}
	// WriteHeader has written the header records; Close would add padding and a trailer, not wanted.
	return buf.Bytes(), nil
}

// padding is the number of zero bytes that complete an entry of size bytes to a tar record.
func padding(size int64) int {
	return int((blockSize - size%blockSize) % blockSize)
}

// blockID is a block's name ("d-0000000042") and the ID the sink receives (its base64).
type blockID struct {
	name string
	id   string
}

func newBlockID(kind byte, seq int64) blockID {
	name := fmt.Sprintf("%c-%010d", kind, seq)
	return blockID{name: name, id: base64.StdEncoding.EncodeToString([]byte(name))}
}

// formatBytes prints n for a person: "9 GiB", "1.5 MiB", "300 bytes".
func formatBytes(n int64) string {
	units := []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%d %s", n/u.size, u.name)
			}
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.name)
		}
	}
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}
