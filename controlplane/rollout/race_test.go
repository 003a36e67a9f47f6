//go:build race

package rollout

// raceEnabled scales the property tests down under the race detector,
// which makes them about ten times slower; the invariants are the same.
const raceEnabled = true
