package benchreport

// Comparisons is the declared list `make bench` runs and reports: each pairs
// one sub-benchmark row that is the baseline with one that is ours, both
// measured by the same `go test` invocation.
var Comparisons = []Comparison{
	{
		Name:     "shm-read",
		Pkg:      "./agent/inferapi",
		Bench:    "^BenchmarkShmRead$/^(copy-prealloc|shm)$",
		Baseline: "BenchmarkShmRead/copy-prealloc",
		Ours:     "BenchmarkShmRead/shm",
		Metric:   "ns/op",
		Note:     "a 602 KB input read from a shared memory region (header decode, region checks, guarded copy) vs the guarded copy alone, its floor; the binary-body path is not the baseline because its body crosses the socket before its decode",
	},
	{
		Name:     "metrics-queue",
		Pkg:      "./agent/metrics",
		Bench:    "^BenchmarkQueue$",
		Baseline: "BenchmarkQueue/chan",
		Ours:     "BenchmarkQueue/chunks",
		Metric:   "ns/op",
		Note:     "the agent's chunked telemetry queue vs a buffered channel, one record in and out",
	},
	{
		Name:     "infer-api-digits",
		Pkg:      "./agent/inferapi",
		Bench:    "^BenchmarkInfer$/^digits$/^(direct-idle|api)$/^clients=1$",
		Baseline: "BenchmarkInfer/digits/direct-idle/clients=1",
		Ours:     "BenchmarkInfer/digits/api/clients=1",
		Metric:   "p50-µs",
		Note:     "median latency of a digits inference through the local HTTP API vs the runtime called directly at the same request rate",
	},
	{
		Name:     "monitor-digits",
		Pkg:      "./agent",
		Bench:    "^BenchmarkMonitorInfer$/^digits$/^sequential$/^(off|on)$",
		Baseline: "BenchmarkMonitorInfer/digits/sequential/off",
		Ours:     "BenchmarkMonitorInfer/digits/sequential/on",
		Metric:   "ns/op",
		Note:     "a digits inference with the monitor recording telemetry vs with recording off",
	},
	{
		Name:      "monitor-function",
		Pkg:       "./agent",
		Bench:     "^BenchmarkMonitorFunctionWriter$/^(tensor|function)$",
		Benchtime: "20000x",
		Baseline:  "BenchmarkMonitorFunctionWriter/tensor",
		Ours:      "BenchmarkMonitorFunctionWriter/function",
		Metric:    "ns/op",
		Note:      "a digits record's telemetry path (inference side and metrics writer) with its features computed by the bundle's WASM monitor function on the writer vs read from the input tensor",
	},
	{
		Name:     "ingest-pipeline",
		Pkg:      "./controlplane/telemetry",
		Bench:    "^BenchmarkIngestPipeline$/^features=64$",
		Baseline: "BenchmarkIngestPipeline/features=64/callback",
		Ours:     "BenchmarkIngestPipeline/features=64/decoders",
		Metric:   "summaries/s",
		Higher:   true,
		Note:     "telemetry summaries ingested through the decoder pool vs decoded in the MQTT callback",
	},
	{
		Name:     "ingest-replicas",
		Pkg:      "./controlplane/telemetry",
		Bench:    "^BenchmarkIngestReplicas$/^(sqlite|postgres)$/^replicas=(1|3)$",
		Baseline: "BenchmarkIngestReplicas/sqlite/replicas=1",
		Ours:     "BenchmarkIngestReplicas/postgres/replicas=3",
		Metric:   "summaries/s",
		Higher:   true,
		Note:     "telemetry ingest with three server replicas sharing PostgreSQL vs one server on SQLite",
	},
}
