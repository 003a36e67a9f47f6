// Package mosquittotest starts real Mosquitto brokers for tests: each in
// its own t.TempDir(), on a free loopback port, stopped by t.Cleanup.
//
// When the mosquitto binary is missing, Start skips the test on a developer
// machine and fails it under CI (CI set), where .ci/deps installs it.
package mosquittotest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
)

// Binary is the mosquitto executable Start runs.
var Binary = "/usr/sbin/mosquitto"

// Options chooses the broker's mode. The zero value is dynamic security
// with a generated admin password.
type Options struct {
	// Dynamic security (Static false): the admin InitDynsec creates.
	// "" means "admin" and a random password.
	AdminUser, AdminPassword string

	// Static mode: the password file's and the ACL file's contents.
	Static    bool
	Passwords string
	ACL       string

	// Persistence keeps retained messages across Restart.
	Persistence bool
}

// Broker is a running mosquitto.
type Broker struct {
	t    testing.TB
	Dir  string // the broker's folder: config, dynsec JSON, log, database
	Port int
	// AdminUser and AdminPassword log in to the dynamic-security plugin.
	AdminUser, AdminPassword string

	conf string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	logs int           // log files written so far
}

// Start starts a broker, waits until it accepts connections and stops it
// when the test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("mosquitto not installed (%v); CI installs it with .ci/deps", err)
		}
		t.Fatalf("mosquitto not installed under CI: %v", err)
	}
	b := &Broker{t: t, Dir: t.TempDir(), AdminUser: opts.AdminUser, AdminPassword: opts.AdminPassword}
	co := mosquitto.ConfigOptions{Bind: "127.0.0.1"}
	if os.Geteuid() == 0 {
		co.User = "root" // else mosquitto drops to "mosquitto", who cannot write t.TempDir()
	}
	if opts.Persistence {
		co.PersistenceDir = b.Dir
	}
	if opts.Static {
		co.PasswordFile = filepath.Join(b.Dir, "passwd")
		co.ACLFile = filepath.Join(b.Dir, "acl")
		b.write(co.PasswordFile, opts.Passwords)
		b.write(co.ACLFile, opts.ACL)
	} else {
		if b.AdminUser == "" {
			b.AdminUser = "admin"
		}
		if b.AdminPassword == "" {
			b.AdminPassword = randomSecret()
		}
		plugin, err := mosquitto.FindDynsecPlugin()
		if err != nil {
			t.Fatal(err)
		}
		co.DynsecPlugin = plugin
		co.DynsecFile = filepath.Join(b.Dir, "dynsec.json")
		if err := mosquitto.InitDynsec(co.DynsecFile, b.AdminUser, b.AdminPassword); err != nil {
			t.Fatal(err)
		}
	}
	// A port found free may be taken before mosquitto binds it: try again.
	var err error
	for range 5 {
		co.Port = freePort(t)
		if err = co.Validate(); err != nil {
			t.Fatal(err)
		}
		b.Port = co.Port
		b.conf = filepath.Join(b.Dir, "mosquitto.conf")
		b.write(b.conf, mosquitto.Config(co))
		if err = b.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start mosquitto: %v\n%s", err, b.Log())
	}
	t.Cleanup(b.Stop)
	return b
}

// URL is the broker's address for paho: tcp://127.0.0.1:port.
func (b *Broker) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.Port) }

// Restart stops the broker gracefully (saving its database) and starts it
// again on the same port and files.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the old socket may linger a moment
	}
	b.t.Fatalf("restart mosquitto: %v\n%s", err, b.Log())
}

// Stop stops the broker: SIGTERM, then SIGKILL after 5 s. It is idempotent.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Log returns everything the broker has logged, every run included.
func (b *Broker) Log() string {
	var s strings.Builder
	for i := 1; ; i++ {
		data, err := os.ReadFile(filepath.Join(b.Dir, fmt.Sprintf("mosquitto.%d.log", i)))
		if err != nil {
			return s.String()
		}
		s.Write(data)
	}
}

// start runs mosquitto and waits until its port accepts connections.
func (b *Broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logs++
	logf, err := os.Create(filepath.Join(b.Dir, fmt.Sprintf("mosquitto.%d.log", b.logs)))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(Binary, "-c", b.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case <-done:
			return fmt.Errorf("mosquitto exited: %v", cmd.ProcessState)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			b.cmd, b.done = cmd, done
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("mosquitto did not listen on %s within 10s", addr)
}

func (b *Broker) write(path, data string) {
	b.t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		b.t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
