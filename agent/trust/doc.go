// Package trust verifies, on the device, what the agent may install: TUF
// metadata in the Uptane shape, checked with go-tuf v2's updater.
//
// Two repositories, both verified in full every time:
//
//	release  (root and targets keys offline with operators; snapshot and
//	          timestamp online): which bundle manifests were released, with
//	          their model, release counter and hardware ids.
//	director (the control plane's online key): which manifest this device
//	          should run.
//
// A target is returned for install only when both repositories name it
// with the same length and hashes, the director names this device (and its
// hardware id, if it names one), the release lists this hardware id (if it
// lists any), and its release counter is not below the one installed for
// the model. Expiry is judged at max(wall clock, persisted time floor); the
// floor only moves forward: to the latest signed issue time seen and to
// the wall clock (capped just past the latest expiry seen, so a clock run
// far ahead cannot lock the device out). Setting the clock back does not
// revive expired metadata.
//
// go-tuf's updater runs against an in-memory Fetcher serving the bytes the
// agent received over MQTT (absent versions answer 404, which is what ends
// root rotation) and a scratch cache seeded from our own durable state.
// Only after every check passes is the new trusted metadata persisted:
// one file, written with fsync, rename and a folder fsync. A refusal
// changes nothing on disk.
//
// Expiry gates installs only: VerifyInstalled checks the installed slot's
// manifest against the recorded hash at boot, with no expiry and no
// network, so a running model survives an offline reboot.
package trust
