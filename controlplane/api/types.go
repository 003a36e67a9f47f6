package api

import (
	"encoding/json"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Health is the /healthz answer.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

// WhoAmI describes the calling token.
type WhoAmI struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	User    string `json:"user,omitempty" doc:"the console user, when the console made the call"`
	Role    string `json:"role"`
}

// DeviceView is a device as the API shows it.
type DeviceView struct {
	ID               string            `json:"id"`
	Labels           map[string]string `json:"labels"`
	Online           bool              `json:"online"`
	LastSeen         *time.Time        `json:"last_seen,omitempty"`
	StatusChangedAt  *time.Time        `json:"status_changed_at,omitempty"`
	EnrolledAt       time.Time         `json:"enrolled_at"`
	AgentVersion     string            `json:"agent_version,omitempty"`
	ProtocolVersion  uint32            `json:"protocol_version,omitempty"`
	DecommissionedAt *time.Time        `json:"decommissioned_at,omitempty"`
	MTLS             bool              `json:"mtls" doc:"a client certificate was issued"`
	Facts            json.RawMessage   `json:"facts,omitempty" doc:"flotilla.v1.Facts as protojson"`
}

// DeviceList is one page of devices.
type DeviceList struct {
	Devices []DeviceView `json:"devices"`
	Next    string       `json:"next,omitempty" doc:"pass as ?after= for the next page"`
}

// LabelPatch sets and removes labels.
type LabelPatch struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// CommandRequest asks a device to do something.
type CommandRequest struct {
	Kind     string `json:"kind" doc:"ping, resync, diag-status or diag-logs"`
	Timeout  string `json:"timeout,omitempty" doc:"Go duration to wait for the answer, default 10s, max 60s"`
	Level    string `json:"level,omitempty" doc:"diag-logs: least level (debug, info, warn, error)"`
	Contains string `json:"contains,omitempty" doc:"diag-logs: keep records containing this text"`
	Limit    uint32 `json:"limit,omitempty" doc:"diag-logs: newest n records (0 = as many as fit 64 KiB)"`
}

// CommandResponse is the device's answer.
type CommandResponse struct {
	OK          bool            `json:"ok"`
	Error       string          `json:"error,omitempty"`
	RoundTripMs float64         `json:"round_trip_ms"`
	Output      json.RawMessage `json:"output,omitempty" doc:"diag commands: the device's answer (agent/diag StatusReport or LogsReport)"`
}

// EnrolTokenRequest creates a bootstrap token.
type EnrolTokenRequest struct {
	Name    string            `json:"name"`
	MaxUses int               `json:"max_uses,omitempty" doc:"devices it may enrol; 0 = unlimited until it expires"`
	TTL     string            `json:"ttl,omitempty" doc:"Go duration, default 24h"`
	Labels  map[string]string `json:"labels,omitempty" doc:"given to every device enrolled with it"`
}

// EnrolTokenView describes a bootstrap token without its secret.
type EnrolTokenView struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	MaxUses   int               `json:"max_uses"`
	Uses      int               `json:"uses"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
}

// EnrolTokenCreated carries the new token's secret, shown once.
type EnrolTokenCreated struct {
	EnrolTokenView
	Token string `json:"token"`
}

// APITokenRequest creates an API token.
type APITokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role" doc:"viewer, operator or admin"`
	TTL  string `json:"ttl,omitempty" doc:"Go duration; empty = never expires"`
}

// APITokenView describes an API token without its secret.
type APITokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// APITokenCreated carries the new token's secret, shown once.
type APITokenCreated struct {
	APITokenView
	Token string `json:"token"`
}

// AuditView is one audit entry.
type AuditView struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
}

// EnrolRequestDoc documents flotilla.v1.EnrolRequest in protojson form.
type EnrolRequestDoc struct {
	Token           string            `json:"token"`
	DeviceID        string            `json:"deviceId"`
	PublicKey       []byte            `json:"publicKey" doc:"ed25519, 32 bytes"`
	Signature       []byte            `json:"signature" doc:"ed25519 over EnrolProof(device_id, public_key, token)"`
	Facts           map[string]any    `json:"facts,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	WantCertificate bool              `json:"wantCertificate,omitempty"`
}

// EnrolResponseDoc documents flotilla.v1.EnrolResponse in protojson form.
type EnrolResponseDoc struct {
	DeviceID        string `json:"deviceId"`
	MQTTURL         string `json:"mqttUrl"`
	MQTTUsername    string `json:"mqttUsername"`
	MQTTPassword    string `json:"mqttPassword"`
	CAPEM           []byte `json:"caPem"`
	CertificatePEM  []byte `json:"certificatePem,omitempty"`
	TopicPrefix     string `json:"topicPrefix"`
	ProtocolVersion uint32 `json:"protocolVersion"`
}

func msTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func deviceView(d store.Device, withFacts bool) DeviceView {
	v := DeviceView{
		ID: d.ID, Labels: d.Labels, Online: d.Online, LastSeen: msTime(d.LastSeen),
		StatusChangedAt: msTime(d.StatusChangedAt), EnrolledAt: time.UnixMilli(d.EnrolledAt).UTC(),
		AgentVersion: d.AgentVersion, ProtocolVersion: d.ProtocolVersion,
		DecommissionedAt: msTime(d.DecommissionedAt), MTLS: d.CertSerial != "",
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if withFacts && len(d.Facts) > 0 {
		var f pb.Facts
		if err := (protoUnmarshal(d.Facts, &f)); err == nil {
			if b, err := protojson.Marshal(&f); err == nil {
				v.Facts = b
			}
		}
	}
	return v
}

func enrolTokenView(t store.EnrolToken) EnrolTokenView {
	return EnrolTokenView{ID: t.ID, Name: t.Name, MaxUses: t.MaxUses, Uses: t.Uses, ExpiresAt: msTime(t.ExpiresAt),
		Labels: t.Labels, CreatedAt: time.UnixMilli(t.CreatedAt).UTC(), RevokedAt: msTime(t.RevokedAt)}
}

func apiTokenView(t store.APIToken) APITokenView {
	return APITokenView{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: time.UnixMilli(t.CreatedAt).UTC(),
		ExpiresAt: msTime(t.ExpiresAt), RevokedAt: msTime(t.RevokedAt), LastUsedAt: msTime(t.LastUsedAt)}
}

// ReleasePush is the release repository's metadata as the operator signed
// it offline with flotctl: file name ("1.root.json", "root.json",
// "targets.json") → bytes.
type ReleasePush struct {
	Metadata map[string][]byte `json:"metadata"`
}

// ReleaseView is the release repository after a push.
type ReleaseView struct {
	RootVersion      int64           `json:"root_version"`
	TargetsVersion   int64           `json:"targets_version"`
	TimestampVersion int64           `json:"timestamp_version"`
	TargetsExpires   time.Time       `json:"targets_expires"`
	Targets          []ReleaseTarget `json:"targets"`
}

// ReleaseTarget is one released manifest.
type ReleaseTarget struct {
	Path     string `json:"path"`
	Model    string `json:"model"`
	Release  uint64 `json:"release"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest"`
	Length   int64  `json:"length"`
	Uploaded bool   `json:"uploaded"` // the bundle store holds the manifest
}

// BundleView is a bundle the control plane holds.
type BundleView struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Release uint64 `json:"release"`
	Version string `json:"version,omitempty"`
	Target  string `json:"target"` // its path in the release repository
	Files   int    `json:"files"`
	Chunks  int    `json:"chunks"`
	Bytes   uint64 `json:"bytes"`
}

// MissingChunks answers a manifest push (409) whose chunks are not all
// uploaded.
type MissingChunks struct {
	Error   string   `json:"error"`
	Missing []string `json:"missing"`
}

// AssignRequest says which release of a model a device should run.
type AssignRequest struct {
	Model   string `json:"model"`
	Release uint64 `json:"release"`
}

// AssignmentView is a device's assignment after it was signed and sent.
type AssignmentView struct {
	Device   string `json:"device"`
	Model    string `json:"model"`
	Release  uint64 `json:"release"`
	Target   string `json:"target"`
	Digest   string `json:"digest"`
	Revision uint64 `json:"revision"` // the desired state that carries it
}

// ProgressView is a device's latest progress report on one bundle.
type ProgressView struct {
	Device      string    `json:"device"`
	Digest      string    `json:"digest"`
	Model       string    `json:"model"`
	Release     uint64    `json:"release"`
	State       string    `json:"state"` // verifying, fetching, unpacking, staged, failed
	BytesHave   uint64    `json:"bytes_have"`
	BytesTotal  uint64    `json:"bytes_total"`
	ChunksHave  uint32    `json:"chunks_have"`
	ChunksTotal uint32    `json:"chunks_total"`
	Rate        float64   `json:"rate"` // bytes per second
	Error       string    `json:"error,omitempty"`
	At          time.Time `json:"at"` // when the control plane received it
}
