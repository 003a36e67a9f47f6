package hostfacts

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// ParseMemTotal returns MemTotal from the text of /proc/meminfo, in bytes;
// 0 when it is missing.
func ParseMemTotal(data []byte) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n
	}
	return 0
}
