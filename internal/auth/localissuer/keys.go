package localissuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// keyBits is the size of generated keys; loaded keys must be at least this large.
	keyBits = 2048
	// MaxKeys is how many keys the key file keeps: the current one and the previous ones, all published.
	MaxKeys = 3
)

// signingKey is an RSA key and its key id.
type signingKey struct {
	priv *rsa.PrivateKey
	kid  string
}

// newSigningKey wraps priv, deriving the kid from the RFC 7638 thumbprint of its public key so that
// every process loading the same key file agrees on it.
func newSigningKey(priv *rsa.PrivateKey) (signingKey, error) {
	jwk := jose.JSONWebKey{Key: &priv.PublicKey}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("key thumbprint: %w", err)
	}
	return signingKey{priv: priv, kid: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

func generateKey() (signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return signingKey{}, fmt.Errorf("generate rsa key: %w", err)
	}
	return newSigningKey(priv)
}

// parseKeys reads the key file format described in the package comment.
func parseKeys(data []byte) ([]signingKey, error) {
	var keys []signingKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		priv, err := parsePrivateKey(block)
		if err != nil {
			return nil, fmt.Errorf("pem block %d: %w", n, err)
		}
		if priv.N.BitLen() < keyBits {
			return nil, fmt.Errorf("pem block %d: rsa key has %d bits, want at least %d", n, priv.N.BitLen(), keyBits)
		}
		k, err := newSigningKey(priv)
		if err != nil {
			return nil, fmt.Errorf("pem block %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM private key found")
	}
	return keys, nil
}

func parsePrivateKey(block *pem.Block) (*rsa.PrivateKey, error) {
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is %T, want RSA", k)
		}
		return priv, nil
	default:
		return nil, fmt.Errorf("unexpected PEM block type %q", block.Type)
	}
}

// encodeKeys writes keys, oldest first, as PKCS #8 "PRIVATE KEY" blocks.
func encodeKeys(keys []signingKey) ([]byte, error) {
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.priv)
		if err != nil {
			return nil, fmt.Errorf("marshal key %s: %w", k.kid, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	}
	return out, nil
}

// readKeyFile loads the key file, creating it with one new key if it does not exist. Creation is safe
// against other processes doing the same: the file appears complete or not at all, and the first
// writer wins.
func readKeyFile(path string) ([]signingKey, os.FileInfo, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKeyFile(path); err != nil {
			return nil, nil, err
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read key file: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("stat key file: %w", err)
	}
	keys, err := parseKeys(data)
	if err != nil {
		return nil, nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return keys, info, nil
}

func createKeyFile(path string) error {
	k, err := generateKey()
	if err != nil {
		return err
	}
	data, err := encodeKeys([]signingKey{k})
	if err != nil {
		return err
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Link, unlike rename, fails when the target exists: a concurrent creator's key is kept.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create key file: %w", err)
	}
	return nil
}

// writeKeyFile replaces the key file atomically.
func writeKeyFile(path string, keys []signingKey) error {
	data, err := encodeKeys(keys)
	if err != nil {
		return err
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace key file: %w", err)
	}
	return nil
}

// writeTemp writes data to a new mode 0600 file next to path and returns its name.
func writeTemp(path string, data []byte) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("create temp key file: %w", err)
	}
	name := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("write temp key file: %w", err)
	}
	return name, nil
}
