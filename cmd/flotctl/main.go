// Command flotctl is the operator's CLI for a Flotilla control plane; see
// controlplane/flotctl for the commands.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := flotctl.Run(ctx, os.Args[1:], flotctl.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
