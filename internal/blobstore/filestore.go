package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mxazure/backups/internal/backup"
)

// The environments' file stores live in the file-store container (Options.FileStoreContainer), one
// folder per environment (Layout.StorePrefix) holding its objects and its collector state.

var _ backup.FileStore = (*Store)(nil)

// MaxCollectorState is the most bytes a collector state may have: WriteCollectorState refuses a
// larger one, so that ReadCollectorState never meets one it refuses.
const MaxCollectorState = 64 << 20

// WalkStores calls fn once for each environment that has a folder in the file-store container (objects
// or a collector state), namespaces in name order and their environments in name order. It lists
// folders only (List Blobs with the delimiter "/"), never the objects, a page (Options.ListPageSize
// folders) per request. Folders that are not a namespace, or not a lowercase canonical UUID below one,
// are skipped. An error of fn stops the walk and is returned as is.
func (s *Store) WalkStores(ctx context.Context, fn func(namespace, envID string) error) error {
	return s.walkFolders(ctx, s.files, "", func(ns string) error {
		if !validNamespace(ns) {
			return nil
		}
		return s.walkFolders(ctx, s.files, ns+"/", func(env string) error {
			if !canonicalUUID(env) {
				return nil
			}
			return fn(ns, env)
		})
	})
}

// walkFolders calls fn with the name (without prefix and "/") of each folder directly under prefix.
func (s *Store) walkFolders(ctx context.Context, containerName, prefix string, fn func(name string) error) error {
	pager := s.client.ServiceClient().NewContainerClient(containerName).NewListBlobsHierarchyPager("/", &container.ListBlobsHierarchyOptions{
		Prefix:     &prefix,
		MaxResults: &s.opts.ListPageSize,
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		switch {
		case bloberror.HasCode(err, bloberror.ContainerNotFound):
			return s.containerMissing(containerName, err)
		case err != nil:
			return transient(err, "list the folders of container %s", containerName)
		}
		if page.Segment == nil {
			continue
		}
		for _, p := range page.Segment.BlobPrefixes {
			if p.Name == nil {
				continue
			}
			name, ok := strings.CutSuffix(strings.TrimPrefix(*p.Name, prefix), "/")
			if !ok || name == "" || strings.Contains(name, "/") {
				continue
			}
			if err := fn(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// WalkObjects calls fn for every object of the environment's file store, in name order, a page
// (Options.ListPageSize objects) per request. StoreObject.Name is relative to the store's folder, as
// ObjectName makes it; the collector state is not an object and is not listed, while other blobs of
// the folder are (the domain ignores names ParseObjectName rejects). An error of fn stops the walk and
// is returned as is.
func (s *Store) WalkObjects(ctx context.Context, namespace, envID string, fn func(backup.StoreObject) error) error {
	if err := checkStore(namespace, envID); err != nil {
		return err
	}
	prefix := Layout{}.StorePrefix(namespace, envID)
	return s.walk(ctx, s.files, prefix, func(item *container.BlobItem) error {
		name := strings.TrimPrefix(*item.Name, prefix)
		if name == collectorStateName {
			return nil
		}
		p := item.Properties
		if p == nil || p.ContentLength == nil || p.LastModified == nil {
			// The collector decides by size and age: never guess them.
			return backup.Errorf(backup.CodeTransient, "could not list the file store of environment %s: Blob Storage listed object %s without its size or its time of last modification", envID, name)
		}
		o := backup.StoreObject{Name: name, Size: *p.ContentLength, LastModified: *p.LastModified}
		if len(p.ContentMD5) > 0 {
			o.MD5 = p.ContentMD5
		}
		return fn(o)
	})
}

// DeleteObject deletes one object of the environment's file store, with its blob snapshots if it has
// any; a missing object is fine. Only names that ParseObjectName accepts are deleted: any other is an
// error, so that no caller can delete the collector state or a blob the layout did not make.
func (s *Store) DeleteObject(ctx context.Context, namespace, envID, name string) error {
	if err := checkStore(namespace, envID); err != nil {
		return err
	}
	if _, _, ok := backup.ParseObjectName(name); !ok {
		return backup.Errorf(backup.CodeInternal, "could not delete %q from the file store of environment %s: it is not the name of a store object", name, envID)
	}
	_, err := s.client.DeleteBlob(ctx, s.files, Layout{}.StoreObject(namespace, envID, name),
		&blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !blobMissing(err) {
		return transient(err, "delete object %s from the file store of environment %s", name, envID)
	}
	return nil
}

// OpenObject streams an object of the environment's file store, in ranges pinned to the first one's
// ETag like OpenArchive, and gives its size before any byte is read. A missing object is CodeNotFound,
// with a message naming it; the rest is classified like every storage call, the reader's errors too.
func (s *Store) OpenObject(ctx context.Context, namespace, envID, name string) (io.ReadCloser, int64, error) {
	if err := checkStore(namespace, envID); err != nil {
		return nil, 0, err
	}
	what := fmt.Sprintf("read object %s of the file store of environment %s", name, envID)
	r, err := s.open(ctx, s.files, Layout{}.StoreObject(namespace, envID, name), what)
	switch {
	case err == nil:
		return r, r.size, nil
	case blobMissing(err):
		return nil, 0, backup.Wrap(backup.CodeNotFound, err, "object %s of the file store of environment %s does not exist", name, envID)
	}
	return nil, 0, transient(err, "%s", what)
}

// ReadCollectorState returns the environment's collector state and its ETag, or the zero state and ""
// when it has none yet. A state that is not JSON is CodeInternal; unknown fields are ignored (a newer
// worker may have written them).
func (s *Store) ReadCollectorState(ctx context.Context, namespace, envID string) (backup.CollectorState, string, error) {
	if err := checkStore(namespace, envID); err != nil {
		return backup.CollectorState{}, "", err
	}
	what := "read the collector state of environment " + envID
	data, etag, found, err := s.readCollectorState(ctx, namespace, envID, what)
	if err != nil || !found {
		return backup.CollectorState{}, "", err
	}
	var st backup.CollectorState
	if err := json.Unmarshal(data, &st); err != nil {
		return backup.CollectorState{}, "", backup.Wrap(backup.CodeInternal, err, "could not %s: it is not valid JSON", what)
	}
	return st, etag, nil
}

// readCollectorState returns the state blob's bytes and ETag; found is false when there is none.
func (s *Store) readCollectorState(ctx context.Context, namespace, envID, what string) (data []byte, etag string, found bool, err error) {
	resp, err := s.client.DownloadStream(ctx, s.files, Layout{}.CollectorState(namespace, envID), nil)
	switch {
	case blobMissing(err):
		return nil, "", false, nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return nil, "", false, s.containerMissing(s.files, err)
	case err != nil:
		return nil, "", false, transient(err, "%s", what)
	}
	defer resp.Body.Close()
	if resp.ETag == nil || *resp.ETag == "" {
		return nil, "", false, backup.Errorf(backup.CodeTransient, "could not %s: Blob Storage did not give its ETag", what)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, MaxCollectorState+1))
	switch {
	case err != nil:
		return nil, "", false, transient(err, "%s", what)
	case len(data) > MaxCollectorState:
		return nil, "", false, backup.Errorf(backup.CodeInternal, "could not %s: it has more than the %d bytes a collector state may have", what, MaxCollectorState)
	}
	return data, string(*resp.ETag), true, nil
}

// WriteCollectorState replaces the environment's collector state with st if its ETag is still etag, or
// creates it if etag is "" and there is none (If-Match, or If-None-Match: *), and returns the new ETag.
// A state changed or created by another writer in the meantime is CodeConflict. The SDK retries a write
// whose answer was lost, and the retry then fails its own condition: a conflict is therefore checked by
// reading the state, and a state that is byte for byte st is this write's success (so two writers of
// the very same state may both succeed; a claim names its owner, so two claims never are the same).
func (s *Store) WriteCollectorState(ctx context.Context, namespace, envID string, st backup.CollectorState, etag string) (string, error) {
	if err := checkStore(namespace, envID); err != nil {
		return "", err
	}
	what := "write the collector state of environment " + envID
	data, err := json.Marshal(st)
	switch {
	case err != nil:
		return "", backup.Wrap(backup.CodeInternal, err, "could not %s", what)
	case len(data) > MaxCollectorState:
		return "", backup.Errorf(backup.CodeInternal, "could not %s: it would have %d bytes, more than the %d a collector state may have", what, len(data), MaxCollectorState)
	}
	cond := &blob.ModifiedAccessConditions{}
	if etag == "" {
		cond.IfNoneMatch = to.Ptr(azcore.ETagAny)
	} else {
		cond.IfMatch = to.Ptr(azcore.ETag(etag))
	}
	sum := md5.Sum(data)
	bb := s.client.ServiceClient().NewContainerClient(s.files).NewBlockBlobClient(Layout{}.CollectorState(namespace, envID))
	resp, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentType: to.Ptr("application/json")},
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		AccessConditions:        &blob.AccessConditions{ModifiedAccessConditions: cond},
	})
	switch {
	// Azure: If-Match not met is 412 ConditionNotMet, If-None-Match: * on an existing blob 409
	// BlobAlreadyExists, and If-Match on a blob deleted since is 404 BlobNotFound or 412.
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists) || (etag != "" && blobMissing(err)):
		cur, curETag, found, rerr := s.readCollectorState(ctx, namespace, envID, what)
		if rerr == nil && found && bytes.Equal(cur, data) {
			return curETag, nil
		}
		return "", backup.Wrap(backup.CodeConflict, err, "could not %s: another writer changed it first", what)
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return "", s.containerMissing(s.files, err)
	case err != nil:
		return "", transient(err, "%s", what)
	case resp.ETag == nil || *resp.ETag == "":
		return "", backup.Errorf(backup.CodeTransient, "could not %s: Blob Storage wrote it without giving its new ETag", what)
	}
	return string(*resp.ETag), nil
}

// checkStore refuses a namespace or environment id that the layout would not make a folder of (the
// domain validates them; this keeps a path from being built of anything else).
func checkStore(namespace, envID string) error {
	if err := backup.ValidateNamespace(namespace); err != nil {
		return err
	}
	if !canonicalUUID(envID) {
		return backup.Errorf(backup.CodeInvalidParameters, "environment id %q is not a UUID in lowercase canonical form", envID)
	}
	return nil
}

// containerMissing is the permanent error for a container that does not exist: the service's own
// (created by EnsureContainers when it starts), or an environment's file container.
func (s *Store) containerMissing(name string, err error) error {
	if name == s.snapshots || name == s.files {
		return backup.Wrap(backup.CodeInvalidState, err,
			"the service's container %s does not exist in the storage account; it is created when the service starts", name)
	}
	return containerMissing(name, err)
}
