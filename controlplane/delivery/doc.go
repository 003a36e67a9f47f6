// Package delivery sends bundles to devices over MQTT: a [Wave] publishes
// each distinct chunk of a bundle once, at QoS 0, on the bundle's topic
// (bundle/{digest}/chunks), and the broker fans it out to every device
// fetching it; a [Repairer] answers the ChunkRequests of devices that
// missed chunks (joined late, lost their connection, had them dropped by a
// full broker queue) on each device's own dev/{id}/chunks topic.
//
// QoS 0 and application-level pacing keep broker memory bounded: a wave
// never outruns its configured rate, the broker drops what a slow or
// offline subscriber cannot take (its per-client queue limit) instead of
// queueing it, and repair fills those gaps later at that device's pace.
// Chunks are verified by the device against the signed manifest, so
// neither the broker nor this package is trusted with their integrity.
//
// The package needs a [Publisher] (controlplane/server's MQTT connection
// is one) and a [Source] (*bundle.Store is one); the Repairer's Handle is
// called with every message on [Repairer.Filter]. docs/delivery.md has the
// design and the broker settings it relies on.
package delivery
