package hostfacts

import (
	"bufio"
	"bytes"
	"slices"
	"strings"
)

// CPUInfo is what /proc/cpuinfo says about the processor.
type CPUInfo struct {
	Model    string
	Features []string // the interesting subset, normalised, sorted
	Cores    uint32   // logical processors
}

// interesting maps a flag as the kernel spells it to the name Facts use.
// Only flags that decide which model variant a device can run are kept, so a
// birth message stays small.
var interesting = map[string]string{
	// x86
	"sse4_1": "sse4.1", "sse4_2": "sse4.2", "avx": "avx", "avx2": "avx2", "fma": "fma",
	"f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
	"avx512_vnni": "avx512vnni", "avx512_bf16": "avx512bf16", "avx_vnni": "avxvnni",
	"avx512_fp16": "avx512fp16", "amx_tile": "amx", "amx_bf16": "amx-bf16", "amx_int8": "amx-int8",
	// arm: "neon" on 32-bit kernels, "asimd" (Advanced SIMD) on arm64.
	"neon": "neon", "asimd": "neon", "asimdhp": "fp16", "fphp": "fp16", "asimddp": "dotprod",
	"sve": "sve", "sve2": "sve2", "i8mm": "i8mm", "bf16": "bf16", "vfpv4": "vfpv4",
}

// ParseCPUInfo reads the text of /proc/cpuinfo: x86 ("model name", "flags")
// and ARM ("Features", and "Hardware" or "Model" where the model name is
// missing) layouts.
func ParseCPUInfo(data []byte) CPUInfo {
	var info CPUInfo
	var hardware, model string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			info.Cores++
		case "model name", "cpu model":
			if info.Model == "" {
				info.Model = val
			}
		case "Hardware":
			hardware = val
		case "Model":
			model = val
		case "flags", "Features":
			for _, fl := range strings.Fields(val) {
				if name, ok := interesting[fl]; ok && !seen[name] {
					seen[name] = true
					info.Features = append(info.Features, name)
				}
			}
		}
	}
	if info.Model == "" {
		info.Model = cmpOr(model, hardware)
	}
	slices.Sort(info.Features)
	return info
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
