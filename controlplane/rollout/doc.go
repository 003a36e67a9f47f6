// Package rollout is the staged-rollout scheduler: the rollout spec (YAML
// or JSON, parsed strictly), a pure reconciler, and the rollout's storage.
//
//	spec ─Parse─▶ Spec ─┐
//	store ─Load─▶ State ┤           ┌─▶ Decisions ─Execute─▶ Assigner (the server:
//	devices, reports ───┼─Reconcile─┤                         director-signed desired states)
//	summaries (window) ─┤           ├─▶ State ─Record.Save─▶ store (+ audit entries)
//	now ────────────────┘           └─▶ gate Evaluations (for operators)
//	operator ─Act(pause|resume|promote|abort)─▶ State, Decision
//
// Reconcile reads no clock, store or network: the same input always gives
// the same output, and reconciling its own result again decides nothing.
// That is what the property tests check, with Nomad's scheduler
// reconciler tests as the model, and what lets a control plane restarted
// mid-rollout continue exactly where it was (the state is plain data).
//
// Devices are ordered per rollout by a stable hash of (rollout, device):
// stages are random across the fleet, yet repeatable. A stage advances
// when every device it switched reports the release committed, its bake
// time has passed, and every gate holds, comparing the devices on the new
// release with the selected devices still on their previous one over the
// same window of summaries; too few devices reporting never passes. A
// breach pauses or rolls back per the spec's failure policy, and the
// decision carries the evaluation and the device summaries it rests on.
// docs/rollouts.md is the reference.
package rollout
