// Package flotctl is the operator's command-line interface to the control
// plane's REST API. cmd/flotctl wires it to the process; tests run it
// in-process against a real server.
//
//	flotctl [global flags] devices list|show|label|decommission|ping|resync|diag|support-bundle
//	flotctl [global flags] tokens list|create|revoke
//	flotctl [global flags] users list|create|set|disable (console logins)
//	flotctl [global flags] enrol-tokens list|create|revoke
//	flotctl [global flags] audit
//	flotctl [global flags] drift, devices events
//	flotctl [global flags] rollout create|list|show|watch|pause|resume|promote|abort|audit
//	flotctl [global flags] devices assign|progress
//	flotctl [global flags] release push, bundle push
//	flotctl keys generate|rotate, release add, bundle build|show|rerelease (offline)
//
// Global flags (or their FLOTILLA_* environment variables): -server, -token
// or -token-file, -ca-file or -ca-fingerprint, -json.
package flotctl

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
)

// Env is the process environment flotctl runs in.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

type globals struct {
	server, token, tokenFile, caFile, caFingerprint string
	json                                            bool
	timeout                                         time.Duration
}

// errUsage marks a usage error (exit code 2).
var errUsage = errors.New("usage")

// Run runs flotctl with args (without the program name) and returns the
// exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	err := run(ctx, args, env)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(env.Stderr, "flotctl:", err)
		return 2
	default:
		fmt.Fprintln(env.Stderr, "flotctl:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, env Env) error {
	var g globals
	fs := flag.NewFlagSet("flotctl", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.StringVar(&g.server, "server", or(env.Getenv("FLOTILLA_SERVER"), "https://127.0.0.1:8443"), "control plane API URL")
	fs.StringVar(&g.token, "token", env.Getenv("FLOTILLA_TOKEN"), "API token (prefer FLOTILLA_TOKEN or -token-file)")
	fs.StringVar(&g.tokenFile, "token-file", env.Getenv("FLOTILLA_TOKEN_FILE"), "file holding the API token")
	fs.StringVar(&g.caFile, "ca-file", env.Getenv("FLOTILLA_CA_FILE"), "CA certificate (PEM) to trust")
	fs.StringVar(&g.caFingerprint, "ca-fingerprint", env.Getenv("FLOTILLA_CA_FINGERPRINT"), "SHA-256 fingerprint of the CA to trust (printed by flotilla-server)")
	fs.BoolVar(&g.json, "json", false, "print JSON")
	fs.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: no command", errUsage)
	}
	push := len(rest) > 1 && rest[1] == "push" // release push, bundle push: to the server
	if rest[0] == "bundle" && !push {          // local: needs no server
		return bundleCmd(out{w: env.Stdout, json: g.json}, env.Stderr, rest[1:])
	}
	if (rest[0] == "keys" || rest[0] == "release") && !push { // offline: operator keys, no server
		return offlineCommand(env, rest)
	}
	c, err := g.client(rest[0] == "help")
	if err != nil {
		return err
	}
	watchCtx := ctx
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	o := out{w: env.Stdout, json: g.json}
	switch rest[0] {
	case "devices", "device", "dev":
		return devices(ctx, c, o, rest[1:])
	case "tokens":
		return apiTokens(ctx, c, o, rest[1:])
	case "users":
		return users(ctx, c, o, env.Getenv, rest[1:])
	case "enrol-tokens", "enroll-tokens":
		return enrolTokens(ctx, c, o, rest[1:])
	case "audit":
		return audit(ctx, c, o, rest[1:])
	case "drift":
		return drift(ctx, c, o, rest[1:])
	case "rollout", "rollouts":
		return rollouts(ctx, watchCtx, c, o, rest[1:])
	case "release":
		return releasePush(ctx, c, o, rest[2:])
	case "bundle":
		return bundlePush(ctx, c, o, env.Stderr, rest[2:])
	case "whoami":
		w, err := c.WhoAmI(ctx)
		if err != nil {
			return err
		}
		return o.print(w, func(tw io.Writer) { fmt.Fprintf(tw, "%s\t%s\t%s\n", w.Name, w.Role, w.TokenID) })
	case "help":
		fs.Usage()
		return nil
	}
	return fmt.Errorf("%w: unknown command %q (devices, tokens, users, enrol-tokens, audit, drift, rollout, whoami)", errUsage, rest[0])
}

const usage = `flotctl — operate a Flotilla fleet

  flotctl devices list [-selector k=v,…] [-online true|false] [-all]
  flotctl devices show ID
  flotctl devices label ID k=v… [-k…]
  flotctl devices decommission ID
  flotctl devices ping|resync ID
  flotctl devices diag ID [status|logs] [-level L] [-grep TEXT] [-limit N]
  flotctl devices support-bundle ID [-o FILE] [-wait D] [-list] [-get UPLOAD]
  flotctl tokens list | create -name N -role viewer|operator|admin [-ttl D] | revoke ID
  flotctl users list | create NAME -role R [-password-file F] | set NAME [-role R] [-password-file F] | disable NAME
  flotctl enrol-tokens list | create -name N [-max-uses N] [-ttl D] [-label k=v…] | revoke ID
  flotctl devices assign DEVICE MODEL RELEASE
  flotctl devices progress DEVICE [-watch]
  flotctl devices events DEVICE [-level warn,error] [-since 24h] [-limit N]
  flotctl drift [-device ID | -selector k=v,…] [-model M [-release N]] [-since 1h] [-worst N]
  flotctl audit [-limit N]
  flotctl rollout create -f spec.yaml | list | show ID [-devices] | watch ID | audit ID
  flotctl rollout pause|resume|promote|abort ID [-reason R]
  flotctl keys generate|rotate -dir D …      (offline)
  flotctl release add -keys D … MANIFEST      (offline)
  flotctl release push -keys D
  flotctl bundle build|show …                 (local)
  flotctl bundle rerelease MODEL COUNTER -keys D -store S [-counter N]   (offline)
  flotctl bundle push -store STORE [DIGEST]
  flotctl whoami

Global flags:
`

func (g globals) client(noAuth bool) (*apiclient.Client, error) {
	token := g.token
	if token == "" && g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" && !noAuth {
		return nil, fmt.Errorf("%w: no API token: set FLOTILLA_TOKEN, -token or -token-file", errUsage)
	}
	var tlsCfg *tls.Config
	var err error
	switch {
	case g.caFile != "":
		var pem []byte
		if pem, err = os.ReadFile(g.caFile); err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		tlsCfg, err = pki.ClientTLS(pem, "")
	case g.caFingerprint != "":
		tlsCfg, err = pki.PinnedClientTLS(g.caFingerprint)
	default:
		return nil, fmt.Errorf("%w: say which CA to trust: -ca-file or -ca-fingerprint (flotilla-server prints it)", errUsage)
	}
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	return apiclient.New(g.server, token, hc), nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
