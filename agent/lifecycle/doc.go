// Package lifecycle takes a model release from its unpacked slot to
// serving requests, and back out again when it misbehaves — by itself,
// offline too — with every step journaled in SQLite (agent/state) so a
// power cut at any point resumes or reverts cleanly.
//
// Each model has two slots, Dir/<model>/a and Dir/<model>/b. The record
// of a model (state.ModelRecord) names the Active slot, during probation
// the Previous one (the rollback target), and while activating the
// Candidate. Moving the active pointer is one SQLite transaction, and
// slot folders are written only while no record points at them (the
// caller unpacks into the folder PrepareSlot returns, with agent/unpack's
// atomic rename), so the active release is always whole: the old one or
// the new one.
//
//	          PrepareSlot (supersedes a staged release or a probation)
//	                │  caller unpacks into the inactive slot
//	Stage ──► staged ──► loading ──► (loaded) ──► checked ──► switched
//	             │           │                        │          │
//	             └───────────┴─ load or golden ───────┘          ▼
//	                            check fails:                 probation ──► committed
//	                            rejected (active unchanged)      │    time up, no breach
//	                                                             ▼
//	                                     breach: error rate, p95 ratio, crashes,
//	                                     shadow disagreements → rolledback
//
// On Open every model is recovered: idle → load the active release;
// staged → run the activation again (at most MaxAttempts interrupted
// tries, then rejected, so a model that kills the agent cannot crash-loop
// it); probation → load both releases and keep judging from the recorded
// start. Slots nothing references are collected. A rejected or rolled-back
// release is remembered by its manifest digest and never staged again
// until a different release is staged, so a retained desired state cannot
// loop a bad model.
//
// Requests go through Infer, which counts them in agent/modelstats (the
// one place probation, diagnostics and telemetry read) and, during a
// shadowed probation, runs the previous release beside the new one and
// counts disagreements. Runtimes are found by name through the small
// Runtimes interface; RuntimeList adapts native plugins and the wasm
// runtime.
package lifecycle
