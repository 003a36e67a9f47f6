package rollout

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse: any input either parses to a spec that validates again, or is
// refused with ErrInvalidSpec; nothing panics. Its seeds run in go test.
func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("testdata/canary.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(simSpec))
	f.Add([]byte(`{"bundle": {"model": "m", "release": 1}, "stages": [{"count": 1}]}`))
	f.Add([]byte("bundle: &a {model: m}\nname: *a\n"))
	f.Add([]byte("stages: [{percent: 1e400}]"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error not ErrInvalidSpec: %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("a parsed spec fails validation: %v", err)
		}
	})
}
