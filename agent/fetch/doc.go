// Package fetch downloads a bundle's chunks over MQTT into the agent's
// chunk store: it listens to the bundle's wave topic while a wave runs,
// then asks the control plane, on the device's own chunk-req topic, for the
// chunks it still lacks, in bounded requests answered on the device's own
// chunks topic.
//
//	subscribe bundle/{digest}/chunks and dev/{id}/chunks
//	  │  store every chunk that is in the manifest and still missing
//	  ▼  (checked against the manifest's hash by chunkstore.Put)
//	quiet for Options.Quiet ──► ChunkRequest for ≤ MaxRequestBytes of gaps
//	  ▲                              │ answered: next request at once
//	  └─ nothing for the request's ──┘ wait, with exponential backoff
//	done: unsubscribe, return nil          deadline or stall: ErrIncomplete
//
// Every stored chunk is durable before it counts, so a Fetch cut at any
// point (connection lost, deadline, process restart) leaves a store that a
// later Fetch continues from: it asks only for Missing chunks. Chunks
// received but not yet stored when a Fetch ends are stored before it
// returns, so a cut costs at most the chunk on the wire.
//
// The package talks to MQTT through the small [Conn] interface and never
// imports the agent's session or anything of the control plane.
package fetch
