package flotilla_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/flotilla-edge/flotilla"

// TestDependencyFences keeps the architecture honest: the agent and the
// control plane share only proto/, proto/ depends on nothing of ours
// outside itself, and no shipped binary links the testing package.
//
// The fences hold for shipped code. Tests may cross them on purpose: the
// agent's trust and chunk-store tests use controlplane/release and
// controlplane/bundle to produce the real artefacts a device receives,
// rather than hand-made imitations of them.
func TestDependencyFences(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-f", "{{.ImportPath}}\t{{join .Deps \" \"}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, list, _ := strings.Cut(line, "\t")
		deps[pkg] = strings.Fields(list)
	}
	if len(deps) < 5 {
		t.Fatalf("go list found only %d packages", len(deps))
	}
	// Who imports testing directly, among everything the binaries link.
	out, err = exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", "./cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	importsTesting := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, list, _ := strings.Cut(line, "\t")
		for _, d := range strings.Fields(list) {
			if d == "testing" {
				importsTesting[pkg] = true
			}
		}
	}
	for _, v := range fenceViolations(deps, importsTesting) {
		t.Error(v)
	}
	t.Logf("checked %d packages", len(deps))
}

// testingAllowed names the third-party packages that import testing in
// shipped code and that we accept: go-plugin keeps its test helpers
// (testing.go) in the package itself, so every go-plugin host and plugin
// links testing. Nothing of ours may.
var testingAllowed = map[string]bool{
	"github.com/hashicorp/go-plugin": true,
}

func under(pkg, dir string) bool {
	return pkg == module+"/"+dir || strings.HasPrefix(pkg, module+"/"+dir+"/")
}

// fenceViolations returns one line per import that crosses a fence.
// importsTesting holds the packages that import testing directly.
func fenceViolations(deps map[string][]string, importsTesting map[string]bool) []string {
	var out []string
	for pkg, ds := range deps {
		for _, d := range ds {
			switch {
			case under(pkg, "agent") && under(d, "controlplane"):
				out = append(out, pkg+" imports "+d+": the agent must not depend on the control plane")
			case under(pkg, "controlplane") && under(d, "agent"):
				out = append(out, pkg+" imports "+d+": the control plane must not depend on the agent")
			case under(pkg, "proto") && strings.HasPrefix(d, module+"/") && !under(d, "proto"):
				out = append(out, pkg+" imports "+d+": proto/ imports nothing of ours outside proto/")
			case under(pkg, "cmd") && importsTesting[d] && !testingAllowed[d]:
				out = append(out, pkg+" links the testing package into a shipped binary through "+d)
			}
		}
	}
	return out
}

// TestFenceViolationsDetects makes sure the fence check is not vacuous.
func TestFenceViolationsDetects(t *testing.T) {
	m := module + "/"
	bad := map[string][]string{
		m + "agent/state":           {m + "controlplane/store"},
		m + "controlplane/registry": {m + "agent"},
		m + "proto/wire":            {m + "firmware/hostfacts", m + "proto/topic"},
		m + "cmd/flotctl":           {"testing", m + "agent/agenttest"},
		m + "cmd/flotilla-agent":    {"testing", "github.com/hashicorp/go-plugin"},
		m + "agentx":                {m + "controlplane"},
	}
	importsTesting := map[string]bool{
		"github.com/hashicorp/go-plugin": true,
		m + "agent/agenttest":            true,
	}
	if got := fenceViolations(bad, importsTesting); len(got) != 4 {
		t.Fatalf("found %d violations, want 4: %q", len(got), got)
	}
}
