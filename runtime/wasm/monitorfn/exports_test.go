package monitorfn

import (
	"errors"
	"testing"
)

// A module of a type section and an export section: memory "memory",
// function "f", global "g".
var threeExports = []byte("\x00asm\x01\x00\x00\x00" +
	"\x01\x04\x01\x60\x00\x00" + // type section: () -> ()
	"\x07\x12\x03" + // export section, 3 entries
	"\x06memory\x02\x00" +
	"\x01f\x00\x00" +
	"\x01g\x03\x00")

func TestExportsReadsEveryKind(t *testing.T) {
	got, err := exports(threeExports)
	if err != nil {
		t.Fatal(err)
	}
	want := []export{{"memory", kindMemory}, {"f", kindFunc}, {"g", kindGlobal}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("export %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestExportsRefusesBadFraming(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":                {},
		"wrong version":        []byte("\x00asm\x02\x00\x00\x00"),
		"section overruns":     []byte("\x00asm\x01\x00\x00\x00\x01\x09\x01"),
		"unterminated size":    []byte("\x00asm\x01\x00\x00\x00\x01\xff\xff"),
		"name overruns":        []byte("\x00asm\x01\x00\x00\x00\x07\x04\x01\x09ab"),
		"no kind":              []byte("\x00asm\x01\x00\x00\x00\x07\x03\x01\x01f"),
		"no index":             []byte("\x00asm\x01\x00\x00\x00\x07\x04\x01\x01f\x00"),
		"trailing bytes":       []byte("\x00asm\x01\x00\x00\x00\x07\x06\x01\x01f\x00\x00\x00"),
		"too many exports":     []byte("\x00asm\x01\x00\x00\x00\x07\x03\xff\xff\x7f"),
		"two export sections":  []byte("\x00asm\x01\x00\x00\x00\x07\x01\x00\x07\x01\x00"),
		"count past the entry": []byte("\x00asm\x01\x00\x00\x00\x07\x05\x02\x01f\x00\x00"),
	} {
		if _, err := exports(b); !errors.Is(err, ErrModule) {
			t.Errorf("%s: %v, want ErrModule", name, err)
		}
	}
}

// FuzzExports: the export-section reader never panics, and what it
// returns respects its limits.
func FuzzExports(f *testing.F) {
	f.Add(threeExports)
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x07\x06\x01\x01f\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := exports(b)
		if err != nil {
			return
		}
		if len(got) > maxExports {
			t.Fatalf("%d exports", len(got))
		}
		for _, e := range got {
			if len(e.name) > maxExportName {
				t.Fatalf("a name of %d bytes", len(e.name))
			}
		}
	})
}
