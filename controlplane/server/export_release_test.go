package server

import (
	"context"
	"fmt"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// RogueRelease plays an attacker who can publish on the broker as the
// control plane: md goes out as the retained release metadata, unchecked.
// A `flotctl release push` (or the next refresh) publishes the real
// metadata again.
func (s *Server) RogueRelease(ctx context.Context, md map[string][]byte) error {
	b, err := wire.Encode(&pb.ReleaseMetadata{Metadata: md})
	if err != nil {
		return err
	}
	if err := s.mqtt.Publish(ctx, s.scheme.Fleet(topic.ReleaseMeta), 1, true, b); err != nil {
		return fmt.Errorf("publish rogue release metadata: %w", err)
	}
	return nil
}
