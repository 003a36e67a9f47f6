package accel

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// smiTimeout bounds one nvidia-smi run; it can hang on a wedged GPU.
const smiTimeout = 10 * time.Second

// smiArgs ask for what fillMemory needs, with a header so the columns are
// found by name.
var smiArgs = []string{"--query-gpu=pci.bus_id,memory.total", "--format=csv"}

// fillMemory runs nvidia-smi and sets MemoryBytes on found[i], whose PCI
// bus is busOf[i].
func (n NVIDIA) fillMemory(found []*flotillapb.Accelerator, busOf []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), smiTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, n.SMI, smiArgs...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("run %s: %w: %s", n.SMI, err, clip(strings.TrimSpace(stderr.String())))
	}
	mem, err := ParseNvidiaSMIMemory(out)
	if err != nil {
		return fmt.Errorf("%s output: %w", n.SMI, err)
	}
	for i, a := range found {
		a.MemoryBytes = mem[NormalizeBusID(busOf[i])]
	}
	return nil
}

// ParseNvidiaSMIMemory reads `nvidia-smi --query-gpu=…,pci.bus_id,
// memory.total --format=csv` output (with its header, columns in any order,
// values with or without the " MiB" unit) and returns each GPU's memory in
// bytes by normalised bus ID.
func ParseNvidiaSMIMemory(data []byte) (map[string]uint64, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.TrimLeadingSpace = true
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	busCol, memCol := -1, -1
	for i, h := range rows[0] {
		switch {
		case h == "pci.bus_id":
			busCol = i
		case strings.HasPrefix(h, "memory.total"):
			memCol = i
		}
	}
	if busCol < 0 || memCol < 0 {
		return nil, fmt.Errorf("%w: header %q lacks pci.bus_id or memory.total", ErrMalformed, rows[0])
	}
	mem := map[string]uint64{}
	for _, row := range rows[1:] {
		v := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(row[memCol]), "MiB"))
		mib, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: memory.total %q", ErrMalformed, clip(row[memCol]))
		}
		mem[NormalizeBusID(row[busCol])] = mib << 20
	}
	return mem, nil
}

// NormalizeBusID writes a PCI address the way /proc and /sys do
// ("0000:00:06.0"): nvidia-smi pads the domain to 8 digits and uses upper
// case ("00000000:00:06.0").
func NormalizeBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	dom, rest, ok := strings.Cut(id, ":")
	if !ok || strings.Count(rest, ":") != 1 {
		return id
	}
	d, err := strconv.ParseUint(dom, 16, 32)
	if err != nil {
		return id
	}
	return fmt.Sprintf("%04x:%s", d, rest)
}
