package blobstore

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/mxazure/backups/internal/backup"
)

// sourceAuthorizer lets Blob Storage read the source of a server-side copy. The Store picks one from
// how it was built: sharedKeySAS for a connection string (Azurite), identity for an Entra credential.
type sourceAuthorizer interface {
	// copySource returns the URL to send as the copy source of src and, unless empty, the value of
	// x-ms-copy-source-authorization. sync says which copy it is for: only Copy Blob From URL takes
	// x-ms-copy-source-authorization. The authorisation must hold until the time until.
	copySource(ctx context.Context, src *blob.Client, sync bool, until time.Time) (url, authorization string, err error)
}

// sasSkew is how far before now a SAS or a delegation key starts, for clocks that disagree.
const sasSkew = 5 * time.Minute

// sharedKeySAS authorises the source with a read-only SAS on that one blob, signed with the account
// key of the Store's connection string.
type sharedKeySAS struct{}

func (sharedKeySAS) copySource(_ context.Context, src *blob.Client, _ bool, until time.Time) (string, string, error) {
	u, err := src.GetSASURL(sas.BlobPermissions{Read: true}, until, &blob.GetSASURLOptions{StartTime: to.Ptr(time.Now().Add(-sasSkew))})
	if err != nil {
		return "", "", fmt.Errorf("sign a read-only SAS for the copy source: %w", err)
	}
	return u, "", nil
}

// storageScope is the Entra scope of a token for Blob Storage.
const storageScope = "https://storage.azure.com/.default"

// identity authorises the source with the service's own Entra identity, which needs read access to
// the source container (Storage Blob Data Reader). Copy Blob From URL takes its bearer token in
// x-ms-copy-source-authorization; Copy Blob does not (neither the REST API nor azblob's
// StartCopyFromURLOptions has it), so the asynchronous copy gets a user-delegation SAS on the source
// blob instead, signed with a delegation key the identity asks for (Storage Blob Delegator on the
// account: Storage Blob Data Contributor includes it only when assigned on the account, and infra scopes
// Contributor to containers). Azurite cannot issue delegation keys: tests check what this
// sends against a fake server.
type identity struct {
	cred    azcore.TokenCredential
	service *service.Client
}

func (id identity) copySource(ctx context.Context, src *blob.Client, sync bool, until time.Time) (string, string, error) {
	if sync {
		tok, err := id.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storageScope}})
		if err != nil {
			return "", "", backup.Wrap(backup.CodeTransient, err, "could not get a token of the service's identity to authorise the source of a copy")
		}
		return src.URL(), "Bearer " + tok.Token, nil
	}
	// One key per copy: asynchronous copies are of files above the synchronous limit, so few.
	start := time.Now().UTC().Add(-sasSkew)
	key, err := id.service.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(start.Format(sas.TimeFormat)),
		Expiry: to.Ptr(until.UTC().Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return "", "", transient(err, "get a user delegation key to authorise the source of a copy")
	}
	parts, err := blob.ParseURL(src.URL())
	if err != nil {
		return "", "", fmt.Errorf("parse the copy source's URL: %w", err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPS,
		StartTime:     start,
		ExpiryTime:    until.UTC(),
		Permissions:   (&sas.BlobPermissions{Read: true}).String(),
		ContainerName: parts.ContainerName,
		BlobName:      parts.BlobName,
	}.SignWithUserDelegation(key)
	if err != nil {
		return "", "", fmt.Errorf("sign a user-delegation SAS for the copy source: %w", err)
	}
	parts.SAS = qp
	return parts.String(), "", nil
}
