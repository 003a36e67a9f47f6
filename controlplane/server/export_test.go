package server

import (
	"context"
	"fmt"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// RogueDirector plays a compromised control plane: the director signs
// manifest as device's target although nobody released it, and the
// desired state carrying it is published with a new revision.
func (s *Server) RogueDirector(ctx context.Context, device, path string, manifest []byte) error {
	tf, err := metadata.TargetFile().FromBytes(path, manifest, "sha256")
	if err != nil {
		return err
	}
	rev, err := s.store.NextDesiredRevision(ctx, device)
	if err != nil {
		return err
	}
	md, err := s.delivery.trust.Sign(device, rev, []*metadata.TargetFiles{tf})
	if err != nil {
		return err
	}
	b, err := wire.Encode(&pb.DesiredState{DeviceId: device, Revision: rev, DirectorMetadata: md})
	if err != nil {
		return err
	}
	if err := s.mqtt.Publish(ctx, s.scheme.Device(topic.Desired, device), 1, true, b); err != nil {
		return fmt.Errorf("publish rogue desired state: %w", err)
	}
	return nil
}
