package flotillapb

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Limits on repeated and free-text fields, so one message cannot make its
// receiver store unbounded data.
const (
	maxLabels       = 64
	maxLabelKey     = 63
	maxLabelValue   = 255
	maxText         = 1024
	maxModels       = 64
	maxEvents       = 1000
	maxAckSequences = 10000
	maxOutput       = 64 << 10
	maxMetadata     = 16
)

func deviceID(id string) error {
	if id == "" {
		return errors.New("device_id is required")
	}
	if err := topic.ValidID(id); err != nil {
		return fmt.Errorf("device_id: %w", err)
	}
	return nil
}

func labels(field string, m map[string]string) error {
	if len(m) > maxLabels {
		return fmt.Errorf("%s: %d labels, at most %d", field, len(m), maxLabels)
	}
	for k, v := range m {
		if k == "" || len(k) > maxLabelKey {
			return fmt.Errorf("%s: key %q must be 1 to %d bytes", field, k, maxLabelKey)
		}
		if len(v) > maxLabelValue {
			return fmt.Errorf("%s: value of %q is over %d bytes", field, k, maxLabelValue)
		}
	}
	return nil
}

func text(field, s string) error {
	if len(s) > maxText {
		return fmt.Errorf("%s is over %d bytes", field, maxText)
	}
	return nil
}

// Validate checks a birth message's required fields and limits.
func (m *Birth) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if m.GetProtocolVersion() == 0 {
		return errors.New("protocol_version is required")
	}
	if err := text("agent_version", m.GetAgentVersion()); err != nil {
		return err
	}
	if f := m.GetFacts(); f != nil && (len(f.GetCpuFeatures()) > 256 || len(f.GetAccelerators()) > 64 || len(f.GetRuntimes()) > 64) {
		return errors.New("facts: too many entries")
	}
	return labels("labels", m.GetLabels())
}

// Validate checks a status message.
func (m *Status) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	switch m.GetState() {
	case Status_STATE_ONLINE, Status_STATE_OFFLINE:
	default:
		return fmt.Errorf("state %v is not online or offline", m.GetState())
	}
	return text("reason", m.GetReason())
}

// Validate checks a heartbeat.
func (m *Heartbeat) Validate() error {
	return deviceID(m.GetDeviceId())
}

// Validate checks a reported state.
func (m *ReportedState) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if len(m.GetModels()) > maxModels {
		return fmt.Errorf("models: %d, at most %d", len(m.GetModels()), maxModels)
	}
	for i, ms := range m.GetModels() {
		if ms.GetName() == "" {
			return fmt.Errorf("models[%d].name is required", i)
		}
		if err := text("models.last_error", ms.GetLastError()); err != nil {
			return err
		}
		if d := ms.GetStagedDigest(); d != "" {
			if err := CheckDigest(d); err != nil {
				return fmt.Errorf("models[%d].staged_digest: %w", i, err)
			}
		}
		if len(ms.GetStagedSlot()) > 8 || len(ms.GetStagedVersion()) > 128 {
			return fmt.Errorf("models[%d]: staged_slot or staged_version too long", i)
		}
	}
	return nil
}

// Validate checks a desired state.
func (m *DesiredState) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if m.GetRevision() == 0 {
		return errors.New("revision is required")
	}
	if len(m.GetDirectorMetadata()) > maxMetadata {
		return fmt.Errorf("director_metadata: %d entries, at most %d", len(m.GetDirectorMetadata()), maxMetadata)
	}
	return labels("hints.labels", m.GetHints().GetLabels())
}

// Validate checks a command.
func (m *Command) Validate() error {
	if m.GetId() == "" || len(m.GetId()) > 128 {
		return errors.New("id is required and at most 128 bytes")
	}
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if m.GetKind() == nil {
		return errors.New("kind is required (or is unknown to this agent)")
	}
	if d := m.GetDiag(); d != nil {
		switch d.GetWhat() {
		case "status", "logs":
		default:
			return fmt.Errorf("diag.what %q is not status or logs", d.GetWhat())
		}
		if len(d.GetLevel()) > 16 || len(d.GetContains()) > 256 {
			return errors.New("diag.level or diag.contains too long")
		}
	}
	if b := m.GetSupportBundle(); b != nil {
		if err := uploadID(b.GetUploadId()); err != nil {
			return err
		}
		if b.GetChunkSize() > MaxSupportChunk {
			return fmt.Errorf("support_bundle.chunk_size %d is over %d", b.GetChunkSize(), MaxSupportChunk)
		}
	}
	return nil
}

// Limits of the support-bundle upload.
const (
	// MaxSupportChunk caps one SupportChunk's data.
	MaxSupportChunk = 256 << 10
	// MaxSupportSignature caps the detached signature on the last chunk.
	MaxSupportSignature = 16 << 10
	// MaxSupportChunks caps a bundle's chunk count (16 GiB at most at
	// the largest chunk size; the control plane's size limit is lower).
	MaxSupportChunks = 1 << 16
)

func uploadID(id string) error {
	if err := topic.ValidID(id); err != nil {
		return fmt.Errorf("upload_id: %w", err)
	}
	return nil
}

// Validate checks a support chunk: its fields in range and consistent
// with each other. The receiver checks it against the upload's first
// chunk and the data's digest.
func (m *SupportChunk) Validate() error {
	if err := uploadID(m.GetUploadId()); err != nil {
		return err
	}
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	switch {
	case m.GetCount() == 0 || m.GetCount() > MaxSupportChunks:
		return fmt.Errorf("count %d is not 1 to %d", m.GetCount(), MaxSupportChunks)
	case m.GetIndex() >= m.GetCount():
		return fmt.Errorf("index %d is not below count %d", m.GetIndex(), m.GetCount())
	case len(m.GetSha256()) != 32 || len(m.GetChunkSha256()) != 32:
		return errors.New("sha256 and chunk_sha256 must be 32 bytes")
	case len(m.GetData()) > MaxSupportChunk:
		return fmt.Errorf("data is %d bytes, over %d", len(m.GetData()), MaxSupportChunk)
	case len(m.GetSignature()) > MaxSupportSignature:
		return fmt.Errorf("signature is over %d bytes", MaxSupportSignature)
	case m.GetTotalSize() > uint64(m.GetCount())*MaxSupportChunk:
		return fmt.Errorf("total_size %d cannot fit %d chunks", m.GetTotalSize(), m.GetCount())
	}
	return nil
}

// Validate checks a support acknowledgement.
func (m *SupportAck) Validate() error {
	if err := uploadID(m.GetUploadId()); err != nil {
		return err
	}
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	return text("error", m.GetError())
}

// Validate checks a command result.
func (m *CommandResult) Validate() error {
	if m.GetCommandId() == "" || len(m.GetCommandId()) > 128 {
		return errors.New("command_id is required and at most 128 bytes")
	}
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if len(m.GetOutput()) > maxOutput {
		return fmt.Errorf("output is over %d bytes", maxOutput)
	}
	return text("error", m.GetError())
}

// Validate checks a telemetry batch.
func (m *Telemetry) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if m.GetEpoch() == "" || len(m.GetEpoch()) > 64 {
		return errors.New("epoch is required and at most 64 bytes")
	}
	if m.GetSequence() == 0 {
		return errors.New("sequence is required")
	}
	if n := len(m.GetEvents().GetEvents()); n > maxEvents {
		return fmt.Errorf("events: %d, at most %d", n, maxEvents)
	}
	if s := m.GetSummaries(); s != nil {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("summaries: %w", err)
		}
	}
	return nil
}

// Validate checks an acknowledgement.
func (m *Ack) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if m.GetEpoch() == "" {
		return errors.New("epoch is required")
	}
	if len(m.GetSequences()) > maxAckSequences {
		return fmt.Errorf("sequences: %d, at most %d", len(m.GetSequences()), maxAckSequences)
	}
	return nil
}

// EnrolProof is the byte string a device signs with its new key when it
// enrols: a domain-separation tag, then each field prefixed by its length.
func EnrolProof(deviceID string, publicKey []byte, token string) []byte {
	var b []byte
	b = append(b, "flotilla-enrol-v1"...)
	for _, f := range [][]byte{[]byte(deviceID), publicKey, []byte(token)} {
		b = append(b, byte(len(f)>>8), byte(len(f)))
		b = append(b, f...)
	}
	return b
}

// Validate checks an enrolment request, including the proof of key
// possession.
func (m *EnrolRequest) Validate() error {
	if m.GetToken() == "" || len(m.GetToken()) > 256 {
		return errors.New("token is required and at most 256 bytes")
	}
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if len(m.GetPublicKey()) != ed25519.PublicKeySize {
		return fmt.Errorf("public_key must be %d bytes, got %d", ed25519.PublicKeySize, len(m.GetPublicKey()))
	}
	if len(m.GetSignature()) != ed25519.SignatureSize ||
		!ed25519.Verify(m.GetPublicKey(), EnrolProof(m.GetDeviceId(), m.GetPublicKey(), m.GetToken()), m.GetSignature()) {
		return errors.New("signature does not prove possession of public_key")
	}
	if f := m.GetFacts(); f != nil && (len(f.GetCpuFeatures()) > 256 || len(f.GetAccelerators()) > 64 || len(f.GetRuntimes()) > 64) {
		return errors.New("facts: too many entries")
	}
	return labels("labels", m.GetLabels())
}
