// Command brokenagent is an agent binary broken on purpose, for the
// self-update tests: it exits with status 3 at once, as a build that
// crashes at start would.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "brokenagent: crashing at start on purpose")
	os.Exit(3)
}
