package password

import (
	"errors"
	"strings"
	"testing"
)

func TestHashAndCheck(t *testing.T) {
	h, err := Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, "correct horse") {
		t.Fatalf("hash %q", h)
	}
	if err := Check(h, "correct horse"); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	if err := Check(h, "correct horsf"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v, want ErrMismatch", err)
	}
	h2, _ := Hash("correct horse")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	if _, err := Hash("short"); err == nil {
		t.Fatal("a 5-byte password was accepted")
	}
	if _, err := Hash(strings.Repeat("x", MaxLength+1)); err == nil {
		t.Fatal("an over-long password was accepted")
	}
}

// TestCheckRefusesHostileHashes: a stored string with absurd parameters or
// garbage is an error, never a huge allocation or a match.
func TestCheckRefusesHostileHashes(t *testing.T) {
	for _, phc := range []string{
		"", "$", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=2,p=0$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$",
	} {
		if err := Check(phc, "whatever1"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Check(%q) = %v, want a malformed-hash error", phc, err)
		}
	}
}

func FuzzCheck(f *testing.F) {
	h, _ := Hash("seed password")
	f.Add(h, "seed password")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5", "x")
	f.Fuzz(func(t *testing.T, phc, pw string) {
		_ = Check(phc, pw) // must not panic or allocate beyond the limits
	})
}
