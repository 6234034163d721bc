package blobstore

import (
	"context"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// DefaultListPageSize is the most blobs one List Blobs request asks for: Storage's own maximum, 5,000.
const DefaultListPageSize = 5000

// FileInfo is one blob of a file container as a listing shows it.
type FileInfo struct {
	Name string
	Size int64
	// ContentMD5 is the blob's Content-MD5 property, nil when it has none: blobs uploaded with Put
	// Block List often have none, and Storage checks a property set that way against nothing.
	ContentMD5 []byte
	// ETag is in the quoted form that the blob's own responses carry (a listing gives it bare).
	ETag         azcore.ETag
	LastModified time.Time
}

// Check is what a copy of this blob must match: its ETag, its size and its MD5 if it has one.
func (f FileInfo) Check() CopyCheck {
	return CopyCheck{ETag: f.ETag, Size: f.Size, MD5: f.ContentMD5}
}

// ListFiles calls fn for every blob under prefix of an environment's file container, in name order,
// a page (Options.ListPageSize blobs) per request. Blob snapshots, versions, deleted and uncommitted
// blobs are not listed. A container that does not exist is a permanent error naming it; an error of
// fn stops the listing and is returned as is.
func (s *Store) ListFiles(ctx context.Context, containerName, prefix string, fn func(FileInfo) error) error {
	return s.walk(ctx, containerName, prefix, func(item *container.BlobItem) error {
		if item.Properties == nil {
			return nil
		}
		return fn(fileInfo(item))
	})
}

// walk lists a container's blobs under prefix, a page (Options.ListPageSize, at most 5,000) at a time.
// A container that does not exist is a permanent error naming it (Store.containerMissing).
func (s *Store) walk(ctx context.Context, containerName, prefix string, fn func(*container.BlobItem) error) error {
	pager := s.client.ServiceClient().NewContainerClient(containerName).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:     &prefix,
		MaxResults: &s.opts.ListPageSize,
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		switch {
		case bloberror.HasCode(err, bloberror.ContainerNotFound):
			return s.containerMissing(containerName, err)
		case err != nil:
			return transient(err, "list the blobs of container %s", containerName)
		}
		for _, item := range page.Segment.BlobItems {
			if item.Name == nil {
				continue
			}
			if err := fn(item); err != nil {
				return err
			}
		}
	}
	return nil
}

func fileInfo(item *container.BlobItem) FileInfo {
	p := item.Properties
	f := FileInfo{Name: *item.Name}
	if p.ContentLength != nil {
		f.Size = *p.ContentLength
	}
	if len(p.ContentMD5) > 0 {
		f.ContentMD5 = p.ContentMD5
	}
	if p.ETag != nil {
		f.ETag = quoted(*p.ETag)
	}
	if p.LastModified != nil {
		f.LastModified = *p.LastModified
	}
	return f
}

// quoted gives an ETag the quotes that response headers carry, so ETags from listings and from
// responses compare equal.
func quoted(e azcore.ETag) azcore.ETag {
	if e == "" || strings.HasPrefix(string(e), `"`) || strings.HasPrefix(string(e), `W/"`) {
		return e
	}
	return `"` + e + `"`
}
