package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
)

// fakeRun is a stand-in for a running `make run`: an issuer and a Functions host that answer, and the
// run.json and key file the run leaves in dir.
func fakeRun(t *testing.T, dir string) runState {
	t.Helper()
	iss, err := localissuer.New(localissuer.Options{KeyFile: filepath.Join(dir, issuerKeyFile)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	issuerURL, err := iss.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/admin/host/status" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"state":"Running"}`))
	}))
	t.Cleanup(host.Close)
	state := runState{URL: host.URL, IssuerURL: issuerURL, Audience: "api://mendix-backups"}
	writeRun(t, dir, state)
	return state
}

func writeRun(t *testing.T, dir string, state runState) {
	t.Helper()
	b, _ := json.Marshal(state)
	if err := os.WriteFile(filepath.Join(dir, runFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// deadURL is an address nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// TestTokenWithoutARun: without a live `make run` (never started, stopped, killed, or another program
// on its port) minting a token and downloading an archive fail with exactly errNotRunning.
func TestTokenWithoutARun(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"never started": func(*testing.T, string) {},
		"unreadable run.json": func(t *testing.T, dir string) {
			_ = os.WriteFile(filepath.Join(dir, runFile), []byte("{"), 0o600)
		},
		"killed: run.json left, nothing listens": func(t *testing.T, dir string) {
			writeRun(t, dir, runState{URL: deadURL(t), IssuerURL: deadURL(t), Audience: "a"})
		},
		"issuer gone, something else on the host port": func(t *testing.T, dir string) {
			state := fakeRun(t, dir)
			state.IssuerURL = deadURL(t)
			writeRun(t, dir, state)
		},
		"host gone": func(t *testing.T, dir string) {
			state := fakeRun(t, dir)
			state.URL = deadURL(t)
			writeRun(t, dir, state)
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			setup(t, dir)
			tok, err := mintToken(context.Background(), dir, localissuer.TokenRequest{Subject: "u", ObjectID: "u"})
			if !errors.Is(err, errNotRunning) || tok != "" {
				t.Errorf("got %q, %v; want errNotRunning", tok, err)
			}
			out := filepath.Join(dir, "a.tar.gz")
			if _, err := downloadArchive(context.Background(), dir, "demo", "11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-555555555555", out, zerolog.Nop()); !errors.Is(err, errNotRunning) {
				t.Errorf("archive: %v, want errNotRunning", err)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("archive: a file was written")
			}
		})
	}
}

// TestTokenForALiveRun: with a live run, the token is signed by the run's issuer for its audience.
func TestTokenForALiveRun(t *testing.T) {
	dir := t.TempDir()
	state := fakeRun(t, dir)
	tok, err := mintToken(context.Background(), dir, localissuer.TokenRequest{Subject: "u", ObjectID: "u", Name: "Demo"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	var claims struct {
		Iss string `json:"iss"`
		Aud any    `json:"aud"`
		Oid string `json:"oid"`
	}
	if err := json.Unmarshal(mustDecode(t, parts[1]), &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != state.IssuerURL || claims.Oid != "u" || !strings.Contains(string(mustJSON(claims.Aud)), state.Audience) {
		t.Errorf("claims %+v, want issuer %s audience %s", claims, state.IssuerURL, state.Audience)
	}
}

// TestMakeTokenSaysOneSentence: the devrun binary, with no run, prints exactly the sentence on stderr,
// nothing on stdout, and exits 1.
func TestMakeTokenSaysOneSentence(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the devrun binary")
	}
	bin := filepath.Join(t.TempDir(), "devrun")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "token")
	cmd.Dir = t.TempDir() // no .local here
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	if want := errNotRunning.Error() + "\n"; stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stdout %q stderr %q, want stderr %q only", stdout.String(), stderr.String(), want)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func mustDecode(t *testing.T, segment string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
