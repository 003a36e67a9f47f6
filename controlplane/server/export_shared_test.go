package server

import (
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// ReleaseTimestamp is the release repository's timestamp.json this
// replica serves and its version; 0 and nil before the first push.
func (s *Server) ReleaseTimestamp() (int64, []byte) {
	b := s.delivery.trust.Metadata()[release.FileTimestamp]
	ts, err := metadata.Timestamp().FromBytes(b)
	if err != nil {
		return 0, nil
	}
	return ts.Signed.Version, b
}
