package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Key roles. RoleOnline signs snapshot and timestamp (and the director).
const (
	RoleRoot    = "root"
	RoleTargets = "targets"
	RoleOnline  = "online"
)

// Key is an ed25519 signing key for one role.
type Key struct {
	Role    string
	Private ed25519.PrivateKey
}

// GenerateKey makes a new ed25519 key for role.
func GenerateKey(role string) (*Key, error) {
	if !validRole(role) {
		return nil, fmt.Errorf("key role %q: want root, targets or online", role)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", role, err)
	}
	return &Key{Role: role, Private: priv}, nil
}

func validRole(r string) bool { return r == RoleRoot || r == RoleTargets || r == RoleOnline }

// TUF returns the public half as TUF key metadata.
func (k *Key) TUF() *metadata.Key {
	tk, err := metadata.KeyFromPublicKey(k.Private.Public())
	if err != nil {
		panic(err) // ed25519 is always supported
	}
	return tk
}

// ID is the TUF key ID (hex SHA-256 of the canonical public key).
func (k *Key) ID() string {
	id, err := k.TUF().ID()
	if err != nil {
		panic(err)
	}
	return id
}

func (k *Key) signer() signature.Signer {
	s, err := signature.LoadED25519Signer(k.Private)
	if err != nil {
		panic(err)
	}
	return s
}

const pemRoleHeader = "Flotilla-Role"

// MarshalKey encodes k as PKCS#8 PEM carrying its role in a header.
func MarshalKey(k *Key) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{pemRoleHeader: k.Role}, Bytes: der}), nil
}

// ParseKey decodes a key written by MarshalKey.
func ParseKey(b []byte) (*Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("parse key: no PRIVATE KEY PEM block")
	}
	role := blk.Headers[pemRoleHeader]
	if !validRole(role) {
		return nil, fmt.Errorf("parse key: role %q: want root, targets or online", role)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse key: %T is not ed25519", k)
	}
	return &Key{Role: role, Private: priv}, nil
}

// WriteKey writes k into dir as <role>-<id prefix>.pem, mode 0600,
// atomically; dir is made 0700 if missing. It returns the file's path.
func WriteKey(dir string, k *Key) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	b, err := MarshalKey(k)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, k.Role+"-"+k.ID()[:16]+".pem")
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	return path, nil
}

// ReadKey reads one key file.
func ReadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ReadKeys reads every <role>-*.pem in dir, sorted by file name.
func ReadKeys(dir, role string) ([]*Key, error) {
	names, err := filepath.Glob(filepath.Join(dir, role+"-*.pem"))
	if err != nil {
		return nil, fmt.Errorf("read %s keys: %w", role, err)
	}
	sort.Strings(names)
	var keys []*Key
	for _, n := range names {
		k, err := ReadKey(n)
		if err != nil {
			return nil, err
		}
		if k.Role != role {
			return nil, fmt.Errorf("%s: holds a %s key, named %s", n, k.Role, role)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func keyIDs(keys []*Key) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID()[:16]
	}
	return strings.Join(ids, ",")
}
