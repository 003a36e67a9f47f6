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
	for _, v := range fenceViolations(deps) {
		t.Error(v)
	}
	t.Logf("checked %d packages", len(deps))
}

func under(pkg, dir string) bool {
	return pkg == module+"/"+dir || strings.HasPrefix(pkg, module+"/"+dir+"/")
}

// fenceViolations returns one line per import that crosses a fence.
func fenceViolations(deps map[string][]string) []string {
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
			case under(pkg, "cmd") && d == "testing":
				out = append(out, pkg+" links the testing package into a shipped binary")
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
		m + "cmd/flotctl":           {"testing"},
		m + "agentx":                {m + "controlplane"},
	}
	if got := fenceViolations(bad); len(got) != 4 {
		t.Fatalf("found %d violations, want 4: %q", len(got), got)
	}
}
