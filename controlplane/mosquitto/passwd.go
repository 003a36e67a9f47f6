package mosquitto

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"strings"
)

// Mosquitto's password hashing, shared by mosquitto_passwd files ("$7$")
// and the dynamic-security JSON: PBKDF2-HMAC-SHA512 over a 12-byte random
// salt, 64-byte key, base64 with padding. 101 iterations is mosquitto's own
// default; device secrets are random, so more would only slow every connect.
const (
	hashIterations = 101
	saltLen        = 12
	keyLen         = 64
)

// hash is one salted password hash.
type hash struct {
	salt, key  string // base64
	iterations int
}

func hashPassword(password string) (hash, error) {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails
	key, err := pbkdf2.Key(sha512.New, password, salt, hashIterations, keyLen)
	if err != nil {
		return hash{}, fmt.Errorf("hash password: %w", err)
	}
	enc := base64.StdEncoding
	return hash{salt: enc.EncodeToString(salt), key: enc.EncodeToString(key), iterations: hashIterations}, nil
}

// PasswordLine returns one line of a mosquitto password_file (the format
// mosquitto_passwd writes): "user:$7$101$salt$hash", without a newline.
func PasswordLine(user, password string) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\r\n") {
		return "", fmt.Errorf("password file user %q: empty, or contains ':' or a newline", user)
	}
	if password == "" || strings.ContainsAny(password, "\r\n") {
		return "", fmt.Errorf("password for %s: empty, or contains a newline", user)
	}
	h, err := hashPassword(password)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:$7$%d$%s$%s", user, h.iterations, h.salt, h.key), nil
}
