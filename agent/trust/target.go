package trust

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Target is a manifest both repositories agreed on for this device.
type Target struct {
	Path           string
	Length         int64
	SHA256         string // hex
	Model          string
	ReleaseCounter uint64
	Version        string // display only
	Kind           string
	HardwareIDs    []string
	Custom         json.RawMessage // the release repository's custom metadata, as signed
	// DirectorWaived is set by VerifySideload when the director check was
	// waived by local authorisation; the caller must journal it and report
	// it at the next contact.
	DirectorWaived bool
}

// Check verifies manifest bytes against the target's length and sha256.
func (t Target) Check(manifest []byte) error {
	sum := sha256.Sum256(manifest)
	if int64(len(manifest)) != t.Length || hex.EncodeToString(sum[:]) != t.SHA256 {
		return fmt.Errorf("%s: %d bytes sha256 %x, want %d bytes %s: %w", t.Path, len(manifest), sum, t.Length, t.SHA256, ErrTargetMismatch)
	}
	return nil
}

// releaseCustom is controlplane/release.ReleaseCustom, read on the device.
type releaseCustom struct {
	Model          string   `json:"model"`
	ReleaseCounter uint64   `json:"release_counter"`
	Version        string   `json:"version,omitempty"`
	Kind           string   `json:"kind,omitempty"`
	HardwareIDs    []string `json:"hardware_ids,omitempty"`
}

// directorCustom is controlplane/release.DirectorCustom.
type directorCustom struct {
	DeviceID   string `json:"device_id"`
	HardwareID string `json:"hardware_id,omitempty"`
}
