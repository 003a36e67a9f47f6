// Package password hashes and checks console users' passwords with
// argon2id (RFC 9106), stored as PHC strings:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (base64, no padding).
//
// Check reads the parameters from the stored string, so they can be raised
// later without invalidating old hashes; it refuses parameters beyond
// sane limits, so a hostile stored string cannot make a login allocate
// gigabytes.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// The parameters of new hashes: OWASP's argon2id minimum (19 MiB, two
// passes, one lane).
const (
	memoryKiB = 19 * 1024
	passes    = 2
	lanes     = 1
	saltLen   = 16
	keyLen    = 32
)

// Limits on what Check accepts.
const (
	MinLength    = 8    // bytes of a new password
	MaxLength    = 1024 // bytes of any password
	maxMemoryKiB = 256 * 1024
	maxPasses    = 16
	maxLanes     = 16
)

// ErrMismatch is returned by Check for a wrong password.
var ErrMismatch = errors.New("password does not match")

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of a new password, which must be MinLength
// to MaxLength bytes.
func Hash(pw string) (string, error) {
	if len(pw) < MinLength || len(pw) > MaxLength {
		return "", fmt.Errorf("password must be %d to %d bytes", MinLength, MaxLength)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, passes, memoryKiB, lanes, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, memoryKiB, passes, lanes,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Check reports whether pw matches the PHC string phc: nil when it does,
// ErrMismatch when it does not, another error when phc is malformed.
func Check(phc, pw string) error {
	if len(pw) > MaxLength {
		return ErrMismatch
	}
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return errors.New("password hash: not an argon2id PHC string")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return errors.New("password hash: unsupported argon2 version")
	}
	var m, t uint32
	var p uint8
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || n != 3 ||
		m < 8 || m > maxMemoryKiB || t < 1 || t > maxPasses || p < 1 || p > maxLanes {
		return errors.New("password hash: parameters out of range")
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return errors.New("password hash: bad salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return errors.New("password hash: bad key")
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}
