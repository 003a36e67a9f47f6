package registry

import (
	"context"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// Store is what the registry needs of the control plane's store
// (controlplane/store implements it; its shared test suite runs it on
// SQLite and PostgreSQL).
type Store interface {
	EnrolDevice(ctx context.Context, tokenHash []byte, d store.Device, now int64) (store.Device, error)
	EnrolTokenByHash(ctx context.Context, hash []byte) (store.EnrolToken, error)
	Device(ctx context.Context, id string) (store.Device, error)
	DeviceCredential(ctx context.Context, id string) (hash []byte, active bool, err error)
	SetDeviceCredential(ctx context.Context, id string, hash []byte) error
	RecordBirth(ctx context.Context, id string, facts []byte, agentVersion string, protocolVersion uint32, at int64) error
	SetStatus(ctx context.Context, id string, online bool, at int64) (bool, error)
	Touch(ctx context.Context, id string, at int64) error
	SetLabels(ctx context.Context, id string, set map[string]string, remove []string, now int64) (store.Device, error)
	NextDesiredRevision(ctx context.Context, id string) (uint64, error)
	Decommission(ctx context.Context, id string, at int64) (store.Device, error)
	AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error)
}
