package registry_test

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

// BenchmarkConnectAuth measures what the broker pays per device CONNECT:
// our SHA-256 check against the bcrypt baseline (cost 10, bcrypt's
// default), both behind the same SQLite lookup, side by side. A fleet
// reconnecting after a broker restart pays this once per device.
func BenchmarkConnectAuth(b *testing.B) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "db.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	storetest.CreateToken(b, st, "t", 0, nil)
	const secret = "0123456789abcdef0123456789abcdef0123456789a"
	d := storetest.NewDevice(b, "dev-1", nil)
	h := sha256.Sum256([]byte(secret))
	d.CredentialHash = h[:]
	if _, err := st.EnrolDevice(ctx, storetest.Hash("t"), d, 1); err != nil {
		b.Fatal(err)
	}
	reg := registry.New(registry.Config{Store: st})

	b.Run("sha256", func(b *testing.B) {
		for b.Loop() {
			if _, err := reg.Authenticate(ctx, "dev-1", "dev-1", []byte(secret), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	bh, _ := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
	b.Run("bcrypt-baseline", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := st.DeviceCredential(ctx, "dev-1"); err != nil {
				b.Fatal(err)
			}
			if err := bcrypt.CompareHashAndPassword(bh, []byte(secret)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
