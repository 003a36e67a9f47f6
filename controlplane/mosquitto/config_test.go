package mosquitto_test

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
)

func TestConfig(t *testing.T) {
	dyn := mosquitto.ConfigOptions{
		Port: 8883, CAFile: "/etc/flotilla/ca.pem", CertFile: "/etc/flotilla/broker.pem", KeyFile: "/etc/flotilla/broker.key",
		DynsecFile: "/var/lib/flotilla/mosquitto/dynsec.json", PersistenceDir: "/var/lib/flotilla/mosquitto",
	}
	if err := dyn.Validate(); err != nil {
		t.Fatal(err)
	}
	conf := mosquitto.Config(dyn)
	for _, want := range []string{
		"allow_anonymous false\n", "listener 8883\n", "certfile /etc/flotilla/broker.pem\n",
		"keyfile /etc/flotilla/broker.key\n", "cafile /etc/flotilla/ca.pem\n", "require_certificate false\n",
		"plugin " + mosquitto.DefaultDynsecPlugin + "\n",
		"plugin_opt_config_file /var/lib/flotilla/mosquitto/dynsec.json\n",
		"persistence true\n", "persistence_location /var/lib/flotilla/mosquitto/\n",
		"max_packet_size " + strconv.Itoa(mosquitto.MaxPacketSize()) + "\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "password_file") {
		t.Error("dynamic-security config names a password file")
	}
	if mosquitto.MaxPacketSize() < 1<<20+1024 {
		t.Errorf("max packet size %d does not fit a 1 MiB desired state", mosquitto.MaxPacketSize())
	}

	static := mosquitto.ConfigOptions{Bind: "127.0.0.1", PasswordFile: "/p", ACLFile: "/a"}
	if err := static.Validate(); err != nil {
		t.Fatal(err)
	}
	conf = mosquitto.Config(static)
	for _, want := range []string{"listener 1883 127.0.0.1\n", "password_file /p\n", "acl_file /a\n", "persistence false\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("static config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "plugin") || strings.Contains(conf, "certfile") {
		t.Errorf("static plain config has a plugin or TLS:\n%s", conf)
	}

	for name, o := range map[string]mosquitto.ConfigOptions{
		"no mode":     {},
		"both modes":  {DynsecFile: "/d", PasswordFile: "/p", ACLFile: "/a"},
		"no acl":      {PasswordFile: "/p"},
		"cert no key": {DynsecFile: "/d", CertFile: "/c"},
		"ca no cert":  {DynsecFile: "/d", CAFile: "/ca"},
		"bad port":    {DynsecFile: "/d", Port: 70000},
		"injection":   {DynsecFile: "/d\nallow_anonymous true"},
	} {
		if o.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPasswordLine(t *testing.T) {
	line, err := mosquitto.PasswordLine("d1", "secret")
	if err != nil {
		t.Fatal(err)
	}
	user, rest, _ := strings.Cut(line, ":")
	f := strings.Split(rest, "$") // "", "7", "101", salt, hash
	if user != "d1" || len(f) != 5 || f[1] != "7" || f[2] != "101" {
		t.Fatalf("line %q", line)
	}
	salt, err1 := base64.StdEncoding.DecodeString(f[3])
	key, err2 := base64.StdEncoding.DecodeString(f[4])
	if err1 != nil || err2 != nil || len(salt) != 12 || len(key) != 64 {
		t.Fatalf("salt %d bytes (%v), key %d bytes (%v)", len(salt), err1, len(key), err2)
	}
	want, _ := pbkdf2.Key(sha512.New, "secret", salt, 101, 64)
	if string(want) != string(key) {
		t.Error("hash is not PBKDF2-SHA512 of the password")
	}
	again, _ := mosquitto.PasswordLine("d1", "secret")
	if again == line {
		t.Error("two lines share a salt")
	}
	for _, bad := range [][2]string{{"", "x"}, {"a:b", "x"}, {"a\nb", "x"}, {"a", ""}, {"a", "x\ny"}} {
		if _, err := mosquitto.PasswordLine(bad[0], bad[1]); err == nil {
			t.Errorf("PasswordLine(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestInitDynsecRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dynsec.json")
	if err := mosquitto.InitDynsec(path, "admin", "pw"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := mosquitto.InitDynsec(path, "admin", "other"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second init: %v", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("second init changed the file")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".dynsec-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
