// Package telemetry is the control plane's side of device telemetry: it
// ingests window summaries, stores each message once, acknowledges only
// what is committed, and answers drift queries for a device, a cohort and
// the fleet by merging summaries (proto/summary), using hourly and daily
// rollups where they cover the range, with a retention policy.
//
//	device ──Telemetry(device, epoch, seq)──▶ Ingest.Handle ─▶ queue
//	  ▲                                                        │ batches
//	  └──────────── Ack(device, epoch, seqs) ◀── commit ◀──────┘
//
// De-duplication is by (device, epoch, sequence) in the store, so a
// message delivered twice (a resend after a lost ack, a broker redelivery,
// two replicas on a shared subscription) is stored once and acknowledged
// each time.
package telemetry
