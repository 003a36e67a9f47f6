package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"time"

	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/supportsig"
)

// Formats of the support bundle and its detached signature.
const (
	BundleFormat    = "flotilla-support-bundle/1"
	SignatureFormat = supportsig.Format
	// MaxSignature caps a signature file read for verification.
	MaxSignature = supportsig.MaxSize
	// MaxBundle caps a support bundle read for verification.
	MaxBundle = 256 << 20
)

// BundleInput is what goes into a support bundle.
type BundleInput struct {
	Status StatusReport
	// Journal is the state database's recent events (newest first).
	Journal []state.Event
	// Logs are the agent's recent log records (live only).
	Logs []logring.Entry
	// Config is the configuration file as written; secrets are redacted
	// here, whatever the caller did.
	Config []byte
	// Extra files, by name (already meant for support: redacted too).
	Extra map[string][]byte
	Now   time.Time
}

// BundleFile is one file of a bundle, in its manifest.
type BundleFile struct {
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// BundleManifest describes a bundle: manifest.json, its first file.
type BundleManifest struct {
	Format    string       `json:"format"`
	CreatedAt time.Time    `json:"created_at"`
	DeviceID  string       `json:"device_id,omitempty"`
	Source    string       `json:"source"`
	Version   string       `json:"agent_version,omitempty"`
	Files     []BundleFile `json:"files"`
}

// WriteBundle writes a support bundle (tar.gz) to w: manifest.json,
// status.json, journal.json, logs.jsonl, config.toml and any extra files.
// Every file passes through Redact.
func WriteBundle(w io.Writer, in BundleInput) (BundleManifest, error) {
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	files := map[string][]byte{}
	put := func(name string, v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("support bundle: %s: %w", name, err)
		}
		files[name] = append(b, '\n')
		return nil
	}
	if err := put("status.json", in.Status); err != nil {
		return BundleManifest{}, err
	}
	journal := make([]Event, 0, len(in.Journal))
	for _, e := range in.Journal {
		journal = append(journal, Event{At: e.At, Level: e.Level, Source: "journal", Code: e.Code, Message: e.Message})
	}
	if err := put("journal.json", journal); err != nil {
		return BundleManifest{}, err
	}
	var logs bytes.Buffer
	enc := json.NewEncoder(&logs)
	for _, e := range in.Logs {
		if err := enc.Encode(e); err != nil {
			return BundleManifest{}, err
		}
	}
	files["logs.jsonl"] = logs.Bytes()
	if in.Config != nil {
		files["config.toml"] = RedactConfig(in.Config)
	}
	for name, b := range in.Extra {
		if _, taken := files[name]; taken || name == "manifest.json" || !validBundleName(name) {
			return BundleManifest{}, fmt.Errorf("support bundle: extra file name %q", name)
		}
		files[name] = b
	}
	names := make([]string, 0, len(files))
	for name, b := range files {
		files[name] = Redact(b)
		names = append(names, name)
	}
	sort.Strings(names)
	man := BundleManifest{Format: BundleFormat, CreatedAt: in.Now.UTC(), Source: in.Status.Source, Version: in.Status.Version}
	if in.Status.Identity != nil {
		man.DeviceID = in.Status.Identity.DeviceID
	}
	for _, name := range names {
		sum := sha256.Sum256(files[name])
		man.Files = append(man.Files, BundleFile{Name: name, Size: len(files[name]), SHA256: hex.EncodeToString(sum[:])})
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return man, err
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	write := func(name string, b []byte) error {
		hdr := &tar.Header{Name: "support/" + name, Mode: 0o644, Size: int64(len(b)), ModTime: in.Now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := write("manifest.json", append(mb, '\n')); err != nil {
		return man, fmt.Errorf("support bundle: %w", err)
	}
	for _, name := range names {
		if err := write(name, files[name]); err != nil {
			return man, fmt.Errorf("support bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return man, fmt.Errorf("support bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return man, fmt.Errorf("support bundle: %w", err)
	}
	return man, nil
}

var bundleName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func validBundleName(name string) bool { return bundleName.MatchString(name) }

// Redaction. Secrets never meant for a bundle (the device key, the broker
// password) are not put in; these catch what slips into text anyway.
var (
	pemPrivate = regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----`)
	// key=value, key: value and "key": "value" where the key names a secret.
	secretPair = regexp.MustCompile(`(?i)("?[a-z0-9_.-]*(?:token|password|passwd|secret|private_key|api_key|credential)[a-z0-9_.-]*"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,}&]+)`)
	bearer     = regexp.MustCompile(`(?i)(bearer\s+)[a-z0-9._~+/=-]+`)
	urlSecret  = regexp.MustCompile(`(?i)(://[^/\s:@]+:)[^@\s/]+@`)
)

// Redacted replaces a secret's value.
const Redacted = "[redacted]"

// Redact hides secrets in text: private key PEM blocks, the values of
// keys naming a token, password, secret or credential, bearer tokens and
// passwords in URLs.
func Redact(b []byte) []byte {
	b = pemPrivate.ReplaceAll(b, []byte("-----BEGIN PRIVATE KEY-----"+Redacted+"-----END PRIVATE KEY-----"))
	b = secretPair.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := secretPair.FindSubmatch(m)
		v := Redacted
		if len(sub[2]) > 0 && sub[2][0] == '"' {
			v = `"` + Redacted + `"`
		}
		return append(append([]byte(nil), sub[1]...), v...)
	})
	b = bearer.ReplaceAll(b, []byte("${1}"+Redacted))
	b = urlSecret.ReplaceAll(b, []byte("${1}"+Redacted+"@"))
	return b
}

// RedactConfig redacts a TOML configuration file: every key naming a
// token, password, secret or credential (enrol_token among them) keeps
// its name and loses its value.
func RedactConfig(b []byte) []byte {
	return Redact(b)
}

// The signature lives in proto/supportsig, shared with the control plane
// (which verifies bundles uploaded to it and must not import the agent).
type (
	Signature = supportsig.Signature
	Trust     = supportsig.Trust
	Verified  = supportsig.Verified
)

// Errors of Verify.
var (
	ErrTampered   = supportsig.ErrTampered
	ErrUntrusted  = supportsig.ErrUntrusted
	ErrBadSigFile = supportsig.ErrBadSigFile
)

// Sign signs a bundle with the device key (supportsig.Sign).
func Sign(bundle []byte, key ed25519.PrivateKey, deviceID string, certPEM []byte) Signature {
	return supportsig.Sign(bundle, key, deviceID, certPEM)
}

// ParseSignature decodes a signature file (supportsig.Parse).
func ParseSignature(b []byte) (Signature, error) { return supportsig.Parse(b) }

// Verify checks bundle against sig (supportsig.Verify).
func Verify(bundle []byte, sig Signature, trust Trust) (Verified, error) {
	return supportsig.Verify(bundle, sig, trust)
}

// DiskJournal reads the journal from the data folder read-only.
func DiskJournal(ctx context.Context, dataDir string, n int) ([]state.Event, error) {
	db, err := state.OpenReadOnly(ctx, dataDir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return db.Recent(ctx, n)
}

// DeviceCredentials reads what signs a bundle: the device key and, when
// enrolment issued one, the client certificate (read-only state).
func DeviceCredentials(ctx context.Context, dataDir string) (ed25519.PrivateKey, []byte, error) {
	key, err := state.LoadKey(dataDir)
	if err != nil {
		return nil, nil, err
	}
	var cert []byte
	if db, err := state.OpenReadOnly(ctx, dataDir); err == nil {
		if id, err := db.Identity(ctx); err == nil {
			cert = id.CertPEM
		}
		db.Close()
	}
	return key, cert, nil
}
