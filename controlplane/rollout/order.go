package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"sort"
)

// OrderKey is a device's place in a rollout: the first 8 bytes of
// SHA-256(rollout ID, 0, device ID). Devices are assigned in increasing
// key order, so stages are spread at random across the fleet, yet the same
// for the same rollout every time, and a device that enrols later slots in
// without moving the others.
func OrderKey(rolloutID, deviceID string) uint64 {
	h := sha256.New()
	h.Write([]byte(rolloutID))
	h.Write([]byte{0})
	h.Write([]byte(deviceID))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Order returns the device IDs in rollout order (ties, vanishingly rare,
// by ID).
func Order(rolloutID string, ids []string) []string {
	type kd struct {
		k  uint64
		id string
	}
	ks := make([]kd, len(ids))
	for i, id := range ids {
		ks[i] = kd{OrderKey(rolloutID, id), id}
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].k != ks[j].k {
			return ks[i].k < ks[j].k
		}
		return ks[i].id < ks[j].id
	})
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.id
	}
	return out
}
