package stack

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/console"
)

// ConsoleURL is the web console of the running stack, opened on the demo namespace.
func (st *Stack) ConsoleURL() string {
	return st.URL + console.Prefix + "?namespace=" + DemoNamespace
}

// ConsoleClient is the console's registration at the local issuer (tests register a changed copy to
// see the console handle a misconfigured issuer, then this one again).
func (st *Stack) ConsoleClient() localissuer.Client { return st.consoleClient }

// enableConsole does locally what infra and the app registration do in Azure for the web console: the
// console is a client of the issuer with its callback as redirect URI (under 127.0.0.1 and localhost,
// whichever a browser opens), the demo user is the one the issuer signs in, and the blob service lets
// the console's origin upload archives (CORS), as the storage account's CORS rule does in Azure.
func (st *Stack) enableConsole(ctx context.Context) error {
	u, err := url.Parse(st.URL)
	if err != nil {
		return fmt.Errorf("the host's URL %q: %w", st.URL, err)
	}
	origins := []string{"http://" + u.Host, "http://localhost:" + u.Port()}
	var redirects []string
	for _, o := range origins {
		redirects = append(redirects, o+console.CallbackPath)
	}
	st.consoleClient = localissuer.Client{ID: ConsoleClientID, RedirectURIs: redirects, Audience: Audience}
	st.Issuer.RegisterClient(st.consoleClient)
	st.Issuer.SetSignInUser(localissuer.User{Subject: DemoUserID, ObjectID: DemoUserID, Name: DemoUserName})

	blobs, err := azblob.NewClientFromConnectionString(st.Azurite.ConnectionString(), nil)
	if err != nil {
		return fmt.Errorf("blob client: %w", err)
	}
	_, err = blobs.ServiceClient().SetProperties(ctx, &service.SetPropertiesOptions{CORS: []*service.CORSRule{{
		AllowedOrigins: to.Ptr(strings.Join(origins, ",")),
		AllowedMethods: to.Ptr("PUT,GET,HEAD,OPTIONS"),
		// What the console's Put Block and Put Block List send.
		AllowedHeaders:  to.Ptr("content-type,x-ms-blob-type,x-ms-blob-content-type,x-ms-version,x-ms-date,x-ms-client-request-id"),
		ExposedHeaders:  to.Ptr("etag,x-ms-request-id,x-ms-error-code"),
		MaxAgeInSeconds: to.Ptr[int32](600),
	}}})
	if err != nil {
		return fmt.Errorf("set the blob service's CORS rule for the console: %w", err)
	}
	return nil
}
