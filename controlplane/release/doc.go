// Package release builds the TUF metadata that Flotilla devices trust: the
// release repository (what operators released) and the director (what each
// device should run), in the Uptane shape, with go-tuf v2.
//
// Key hierarchy:
//
//	release root (offline, threshold t-of-n ed25519, operator) ── signs root.json, cross-signs each rotation
//	 ├─ targets   (offline, threshold t-of-n, operator) ── signs targets.json: one target per bundle manifest
//	 ├─ snapshot  (online key, server)                  ── signs snapshot.json: targets.json version+hash
//	 └─ timestamp (online key, server)                  ── signs timestamp.json: snapshot.json version+hash, issue time
//	director root (online key, server; provisioned to the device at enrolment)
//	 └─ targets, snapshot, timestamp (same online key) ── per device: the manifest target it should run
//
// A device installs a manifest only when both repositories name it with the
// same length and hashes (agent/trust). A compromised server holds only
// online keys: it can re-sign snapshot and timestamp and direct a device to
// any released manifest, but it cannot release one.
//
// The manifest is the only TUF target; its chunks are verified against the
// manifest's hashes by the chunk store. Metadata is go-tuf JSON; files are
// written atomically (temp file, fsync, rename, fsync of the folder).
package release
