package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.Manifests = (*Store)(nil)

// WriteManifest stores the manifest of h and entries (manifest.go) at path in the snapshots container,
// replacing any blob there, with one Put Blob whose Content-MD5 Storage checks (and keeps as the
// blob's), content type application/gzip. A zero h.Format and h.Version are the current ones. The
// entries must be what h announces (count, sum of sizes), in strictly increasing UUID order, each
// naming the store object of its UUID, size and MD5: anything ReadManifest would refuse is refused
// before a byte is sent (CodeInternal).
func (s *Store) WriteManifest(ctx context.Context, path string, h backup.ManifestHeader, entries []backup.ManifestEntry) error {
	what := "write " + describe(path)
	var buf bytes.Buffer
	if err := encodeManifest(&buf, h, entries); err != nil {
		var d *manifestDamage
		if errors.As(err, &d) {
			return backup.Wrap(backup.CodeInternal, err, "could not %s: %s", what, d.refusal())
		}
		return backup.Wrap(backup.CodeInternal, err, "could not %s", what)
	}
	sum := md5.Sum(buf.Bytes())
	bb := s.client.ServiceClient().NewContainerClient(s.snapshots).NewBlockBlobClient(path)
	_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(buf.Bytes())), &blockblob.UploadOptions{
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentType: to.Ptr("application/gzip")},
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
	})
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return s.containerMissing(s.snapshots, err)
	case err != nil:
		return transient(err, "%s", what)
	}
	return nil
}

// ReadManifest streams the manifest at path in the snapshots container (in ranges, like OpenArchive;
// one line in memory at a time), calls fn for each entry in order and returns the header. A missing
// manifest is CodeNotFound. One that is not what WriteManifest writes (not gzip, cut short, not JSON
// lines, unknown fields, another format or version, entries out of order, repeated, or disagreeing
// with their objects or with the header, anything after the end) is CodeInternal with
// ErrManifestDamaged as cause, never fewer entries: fn may have been called for entries before the
// damage showed, so the caller keeps nothing of a read that fails. fn's error stops the read and is
// returned as is; a failed read is classified like every storage call.
func (s *Store) ReadManifest(ctx context.Context, path string, fn func(backup.ManifestEntry) error) (backup.ManifestHeader, error) {
	what := "read " + describe(path)
	r, err := s.open(ctx, s.snapshots, path, what)
	switch {
	case blobMissing(err):
		return backup.ManifestHeader{}, backup.Wrap(backup.CodeNotFound, err, "%s does not exist", describe(path))
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return backup.ManifestHeader{}, s.containerMissing(s.snapshots, err)
	case err != nil:
		return backup.ManifestHeader{}, transient(err, "%s", what)
	}
	defer r.Close()
	h, err := decodeManifest(r, fn)
	if errors.Is(err, ErrManifestDamaged) {
		return backup.ManifestHeader{}, backup.Wrap(backup.CodeInternal, err, "could not %s: %s", what, err)
	}
	return h, err
}
