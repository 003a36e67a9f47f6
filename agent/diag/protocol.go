package diag

import (
	"encoding/json"
	"time"

	"github.com/flotilla-edge/flotilla/agent/logring"
)

// ProtocolVersion is the diag protocol this package speaks.
const ProtocolVersion = 1

// SocketName is the diag socket's name in the data folder.
const SocketName = "diag.sock"

// Size limits of the protocol's messages.
const (
	MaxRequest  = 64 << 10
	MaxResponse = 32 << 20
)

// Commands.
const (
	CmdStatus    = "status"
	CmdModels    = "models"
	CmdTestInfer = "test-infer"
	CmdLogs      = "logs"
	CmdResync    = "resync"
	CmdRollback  = "rollback"
)

// Request is one diag request.
type Request struct {
	V        int    `json:"v"`
	Cmd      string `json:"cmd"`
	Model    string `json:"model,omitempty"`    // test-infer, rollback
	Reason   string `json:"reason,omitempty"`   // rollback
	Level    string `json:"level,omitempty"`    // logs: debug, info, warn, error
	Contains string `json:"contains,omitempty"` // logs: substring
	Limit    int    `json:"limit,omitempty"`    // logs: newest n (0 = server default)
}

// Response answers a Request.
type Response struct {
	V     int             `json:"v"`
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Sources of a report.
const (
	SourceAgent = "agent" // the running agent answered
	SourceDisk  = "disk"  // the agent is not running: read from the data folder
)

// StatusReport is the answer to status.
type StatusReport struct {
	Source      string    `json:"source"`
	GeneratedAt time.Time `json:"generated_at"`
	Version     string    `json:"version,omitempty"` // agent version (live only)
	DataDir     string    `json:"data_dir"`

	Identity *Identity `json:"identity,omitempty"`
	Broker   *Broker   `json:"broker,omitempty"` // live only

	ClockSkewSeconds *float64  `json:"clock_skew_seconds,omitempty"` // device minus control plane, from the last command
	SkewMeasuredAt   time.Time `json:"skew_measured_at,omitzero"`
	DesiredRevision  uint64    `json:"desired_revision"`

	Models       []ModelReport    `json:"models"`
	Runtimes     []Runtime        `json:"runtimes,omitempty"`
	Accelerators []Accelerator    `json:"accelerators,omitempty"`
	Buffer       *Buffer          `json:"buffer,omitempty"`
	Disk         Disk             `json:"disk"`
	RecentErrors []Event          `json:"recent_errors"`
	Counters     map[string]int64 `json:"counters,omitempty"`
	Problems     []string         `json:"problems,omitempty"` // what could not be read
}

// Identity is the device's enrolment, without its secrets.
type Identity struct {
	DeviceID    string    `json:"device_id"`
	MQTTURL     string    `json:"mqtt_url"`
	TopicPrefix string    `json:"topic_prefix"`
	EnrolledAt  time.Time `json:"enrolled_at"`
	Certificate bool      `json:"client_certificate"`
}

// Broker is the live connection.
type Broker struct {
	State          string    `json:"state"`
	Session        uint64    `json:"session"`
	ConnectedSince time.Time `json:"connected_since,omitzero"`
	LastContact    time.Time `json:"last_contact,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
}

// ModelReport is one model.
type ModelReport struct {
	Name             string      `json:"name"`
	Phase            string      `json:"phase"`
	Health           string      `json:"health"`
	ActiveRelease    uint64      `json:"active_release"`
	ActiveVersion    string      `json:"active_version,omitempty"`
	ActiveSlot       string      `json:"active_slot,omitempty"`
	PreviousRelease  uint64      `json:"previous_release,omitempty"`  // the rollback target on probation
	CandidateRelease uint64      `json:"candidate_release,omitempty"` // staged
	ProbationSince   time.Time   `json:"probation_since,omitzero"`
	RejectedRelease  uint64      `json:"rejected_release,omitempty"`
	RejectedReason   string      `json:"rejected_reason,omitempty"`
	LastError        string      `json:"last_error,omitempty"`
	Rollbacks        uint64      `json:"rollbacks"`
	Serving          bool        `json:"serving"`           // live only: a release answers requests
	Runtime          string      `json:"runtime,omitempty"` // live only
	Slots            []string    `json:"slots,omitempty"`   // slot folders on disk
	Stats            *ModelStats `json:"stats,omitempty"`   // live only, since the agent started
}

// ModelStats are a model's counters since the agent started.
type ModelStats struct {
	Requests      uint64  `json:"requests"`
	Errors        uint64  `json:"errors"`
	ErrorRate     float64 `json:"error_rate"`
	P50Millis     float64 `json:"p50_ms"`
	P95Millis     float64 `json:"p95_ms"`
	P99Millis     float64 `json:"p99_ms"`
	Crashes       uint64  `json:"crashes"`
	ShadowRuns    uint64  `json:"shadow_runs,omitempty"`
	Disagreements uint64  `json:"disagreements,omitempty"`
}

// Runtime is one runtime a model may ask for.
type Runtime struct {
	Name    string `json:"name"`
	Started bool   `json:"started"`
	Failed  string `json:"failed,omitempty"`
}

// Accelerator is one accelerator found on the device.
type Accelerator struct {
	Kind   string `json:"kind"`
	Vendor string `json:"vendor,omitempty"`
	Model  string `json:"model,omitempty"`
	Driver string `json:"driver,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Buffer is the telemetry buffer (agent/metrics).
type Buffer struct {
	Records           int64     `json:"records"`
	Pending           int64     `json:"pending"`
	DatabaseBytes     int64     `json:"database_bytes"`
	Dropped           uint64    `json:"dropped"`
	Lost              uint64    `json:"lost"`
	Evicted           uint64    `json:"evicted"`
	OldestPendingFrom time.Time `json:"oldest_pending_from,omitzero"`
	LastWriteError    string    `json:"last_write_error,omitempty"`
}

// Disk is the data folder's file system and what the agent keeps there.
type Disk struct {
	Path       string           `json:"path"`
	TotalBytes uint64           `json:"total_bytes"`
	FreeBytes  uint64           `json:"free_bytes"`       // available to the agent
	Used       map[string]int64 `json:"used"`             // bytes per part: models, bundles, metrics, state
	Quotas     map[string]int64 `json:"quotas,omitempty"` // configured caps per part (live only)
}

// Event is a journal entry or a log record.
type Event struct {
	At      time.Time `json:"at"`
	Level   string    `json:"level"`
	Source  string    `json:"source"` // "journal" or "log"
	Code    string    `json:"code,omitempty"`
	Message string    `json:"message"`
}

// TestInferReport answers test-infer.
type TestInferReport struct {
	Model     string  `json:"model"`
	Release   uint64  `json:"release"`
	Version   string  `json:"version,omitempty"`
	Runtime   string  `json:"runtime"`
	HasGolden bool    `json:"has_golden"`
	Passed    bool    `json:"passed"`
	Error     string  `json:"error,omitempty"`
	Millis    float64 `json:"ms"`
}

// LogsReport answers logs.
type LogsReport struct {
	Entries []logring.Entry `json:"entries"`
	Kept    uint64          `json:"kept_total"`           // records ever kept; older ones are forgotten
	Cut     int             `json:"cut_to_fit,omitempty"` // oldest records left out to fit a remote answer
}

// RollbackReport answers rollback.
type RollbackReport struct {
	Model         string `json:"model"`
	ActiveRelease uint64 `json:"active_release"`
	Rollbacks     uint64 `json:"rollbacks"`
	Reported      bool   `json:"reported"` // connected: reported to the control plane now (else on reconnect)
}
