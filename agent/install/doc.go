// Package install stages verified bundles on the device: from the release
// repository's metadata and the director's (from the desired state) to a
// bundle unpacked in its model's inactive slot, every byte checked.
//
//	VerifyForInstall(release, director)  agent/trust: both repositories agree
//	  │ for each target above the model's installed release counter
//	  ▼
//	manifest  subscribe bundle/{digest}/manifest (retained) until it arrives;
//	  │       Target.Check: its length and SHA-256 are the signed target's
//	  ▼
//	fetch     agent/fetch into agent/chunkstore: the wave, then repairs;
//	  │       only chunks the store lacks, each checked against the manifest
//	  ▼
//	unpack    agent/unpack into DIR/models/<model>/<inactive slot>; the
//	  │       manifest beside it as <slot>.manifest
//	  ▼
//	record    trust.RecordInstalled (the counter floor rises), staged.json,
//	          then Stager.OnStaged: activation is agent/lifecycle's
//
// FetchProgress goes to the control plane on the device's progress topic
// throughout. Every refusal is an error wrapping its sentinel (agent/trust,
// unpack, or ErrManifestMismatch here) and changes nothing already staged
// or running. A fetch cut short (ErrIncomplete) leaves its chunks stored,
// and the next Apply continues from them. Cancelling Apply's context ends
// it the same way (ErrIncomplete or ErrManifestTimeout, nothing staged): a
// caller with newer metadata supersedes the running Apply so, then applies
// the new metadata.
//
// Layout of Config.Dir:
//
//	roots/{release,director}.root.json  the roots given at enrolment (Provision)
//	trust/                              agent/trust's durable state
//	chunks/                             agent/chunkstore (under Config.ChunkQuota)
//	models/<model>/{a,b}                slots; <slot>.manifest beside each
//	staged.json                         what is staged, per model
//
// After an Apply that staged something, the chunks neither the active nor
// the staged slot of any model names are collected (collect.go); the
// bundle being fetched is Pinned in the chunk store from its manifest
// until it is staged, durably, so neither a Put over quota nor another
// model's collection takes its chunks, also after a failed fetch or a
// restart; an Apply whose desired state no longer names that release
// unpins it.
//
// The package talks to MQTT only through the small Link interface (what
// agent/fetch needs), so the agent's session and tests plug in their own.
package install
