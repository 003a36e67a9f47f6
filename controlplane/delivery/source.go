package delivery

import (
	"context"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Publisher publishes one MQTT message; for QoS 0 it returns once the
// message is written to the broker connection. controlplane/server's MQTT
// is one.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Source holds bundles' manifests and chunks; *bundle.Store is one.
type Source interface {
	Manifest(digest string) ([]byte, *pb.BundleManifest, error)
	Chunk(sum [32]byte) ([]byte, error)
}

var _ Source = (*bundle.Store)(nil)
