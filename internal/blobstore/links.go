package blobstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.Links = (*Store)(nil)

// linkSigner signs the SAS of a link a user gets to one blob. The Store picks one from how it was
// built, like its sourceAuthorizer: sharedKeyLinks for a connection string (Azurite), delegationLinks
// for an Entra credential. It is an interface of its own rather than a method of sourceAuthorizer: a
// copy source is authorised for Storage itself (a bearer token where the copy takes one, one key per
// rare asynchronous copy), a link for a user's client, which always needs a SAS, with response-header
// overrides, and one with every answer about a download or an upload, hence a cached delegation key.
type linkSigner interface {
	// sign returns the signed query of v, whose ExpiryTime is set; ctx bounds any request for a key.
	sign(ctx context.Context, v sas.BlobSignatureValues) (sas.QueryParameters, error)
}

// fileNamePattern is what DownloadLink accepts as the name a download is served under: it goes into
// the Content-Disposition header Storage answers with, so nothing that could end the quoted string or
// the header gets there.
var fileNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// DownloadLink is a read-only SAS (sp=r) on exactly the blob path (sr=b) of the snapshots container,
// from sasSkew before now until until, whose responses carry Content-Disposition: attachment with
// fileName and the Content-Type of the file name's kind, whatever the blob's own headers say.
func (s *Store) DownloadLink(ctx context.Context, path, fileName string, until time.Time) (string, error) {
	if !fileNamePattern.MatchString(fileName) {
		return "", backup.Errorf(backup.CodeInternal,
			"could not make the download link: the file name must be 1 to 200 letters, digits, dots, dashes or underscores")
	}
	contentType := "application/octet-stream"
	if strings.HasSuffix(fileName, archiveSuffix) {
		contentType = "application/gzip"
	}
	return s.link(ctx, "the download link", s.snapshots, path, until, sas.BlobSignatureValues{
		Permissions:        (&sas.BlobPermissions{Read: true}).String(),
		ContentDisposition: `attachment; filename="` + fileName + `"`,
		ContentType:        contentType,
	})
}

// UploadLink is a write-only SAS on exactly the blob path (sr=b) of the uploads container, from
// sasSkew before now until until: create and write (sp=cw), which Put Blob, Put Block and Put Block
// List need (curl, az storage blob upload, azcopy), and nothing else, so the holder can neither read
// the blob back, nor list, delete or tag anything.
func (s *Store) UploadLink(ctx context.Context, path string, until time.Time) (string, error) {
	return s.link(ctx, "the upload link", s.uploads, path, until, sas.BlobSignatureValues{
		Permissions: (&sas.BlobPermissions{Create: true, Write: true}).String(),
	})
}

// link completes v for the blob path of containerName and signs it. A SAS counts whole seconds, so
// until is cut to its second: the link never outlives it.
func (s *Store) link(ctx context.Context, what, containerName, path string, until time.Time, v sas.BlobSignatureValues) (string, error) {
	now := time.Now().UTC()
	until = until.UTC().Truncate(time.Second)
	if !until.After(now) {
		return "", backup.Errorf(backup.CodeInternal, "could not make %s: it would have expired already, at %s", what, until.Format(time.RFC3339))
	}
	b := s.client.ServiceClient().NewContainerClient(containerName).NewBlobClient(path)
	v.ContainerName, v.BlobName = containerName, path
	v.StartTime, v.ExpiryTime = now.Add(-sasSkew), until
	// Links travel over HTTPS only; Azurite serves plain HTTP, which a SAS must allow to be used there.
	v.Protocol = sas.ProtocolHTTPS
	if strings.HasPrefix(b.URL(), "http://") {
		v.Protocol = sas.ProtocolHTTPSandHTTP
	}
	qp, err := s.links.sign(ctx, v)
	if err != nil {
		return "", fmt.Errorf("make %s: %w", what, err)
	}
	return b.URL() + "?" + qp.Encode(), nil
}

// sharedKeyLinks signs links with the account key of the Store's connection string. The SDK's
// blob.Client.GetSASURL cannot set the response-header overrides, and the client does not hand out
// its key, so the key is read from the connection string again.
type sharedKeyLinks struct {
	cred *sas.SharedKeyCredential
	err  error // why there is no cred
}

func newSharedKeyLinks(connectionString string) sharedKeyLinks {
	var name, key string
	for _, part := range strings.Split(connectionString, ";") {
		k, v, _ := strings.Cut(part, "=") // a key's base64 ends with "="
		switch k {
		case "AccountName":
			name = v
		case "AccountKey":
			key = v
		}
	}
	if name == "" || key == "" {
		return sharedKeyLinks{err: errors.New("the storage connection string has no account name and key to sign links with")}
	}
	cred, err := service.NewSharedKeyCredential(name, key)
	if err != nil {
		return sharedKeyLinks{err: fmt.Errorf("the account key of the storage connection string: %w", err)}
	}
	return sharedKeyLinks{cred: cred}
}

func (k sharedKeyLinks) sign(_ context.Context, v sas.BlobSignatureValues) (sas.QueryParameters, error) {
	if k.err != nil {
		return sas.QueryParameters{}, backup.Wrap(backup.CodeInternal, k.err, "could not sign a link: %s", k.err)
	}
	qp, err := v.SignWithSharedKey(k.cred)
	if err != nil {
		return sas.QueryParameters{}, backup.Wrap(backup.CodeInternal, err, "could not sign a link with the account key")
	}
	return qp, nil
}

// maxKeyLifetime is the longest Azure lets a user delegation key last, from now, so the longest a
// user-delegation link can last.
const maxKeyLifetime = 7 * 24 * time.Hour

// delegationLinks signs links with a user delegation key of the service's identity (Storage Blob
// Delegator, which Storage Blob Data Contributor includes); a link is valid only while its key is too.
// A key costs a request and an Entra token, so one is kept while it covers the links asked for: a new
// key lasts as long as Azure allows (less sasSkew, for a clock ahead of Azure's), and at least until
// the link that needed it ends.
type delegationLinks struct {
	service *service.Client
	// lock is held while the key is read or fetched, so that links asked for together share one
	// fetch; a channel, so that a caller waiting for another's fetch still honours its ctx.
	lock   chan struct{}
	key    *service.UserDelegationCredential
	expiry time.Time // of key
}

func newDelegationLinks(svc *service.Client) *delegationLinks {
	return &delegationLinks{service: svc, lock: make(chan struct{}, 1)}
}

func (d *delegationLinks) sign(ctx context.Context, v sas.BlobSignatureValues) (sas.QueryParameters, error) {
	key, err := d.keyFor(ctx, v.ExpiryTime)
	if err != nil {
		return sas.QueryParameters{}, err
	}
	qp, err := v.SignWithUserDelegation(key)
	if err != nil {
		return sas.QueryParameters{}, backup.Wrap(backup.CodeInternal, err, "could not sign a link with a user delegation key")
	}
	return qp, nil
}

// keyFor returns a delegation key valid at least until until (whole seconds).
func (d *delegationLinks) keyFor(ctx context.Context, until time.Time) (*service.UserDelegationCredential, error) {
	select {
	case d.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, transient(ctx.Err(), "get a user delegation key to sign a link")
	}
	defer func() { <-d.lock }()
	if d.key != nil && !d.expiry.Before(until) {
		return d.key, nil
	}
	now := time.Now().UTC()
	if until.After(now.Add(maxKeyLifetime)) {
		return nil, backup.Errorf(backup.CodeInternal, "could not sign a link valid until %s: a link signed with a user delegation key lasts at most 7 days",
			until.Format(time.RFC3339))
	}
	expiry := now.Add(maxKeyLifetime - sasSkew).Truncate(time.Second)
	if until.After(expiry) {
		expiry = until
	}
	key, err := d.service.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(now.Add(-sasSkew).Format(sas.TimeFormat)),
		Expiry: to.Ptr(expiry.Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return nil, transient(err, "get a user delegation key to sign a link")
	}
	d.key, d.expiry = key, expiry
	return key, nil
}
