package registry

import (
	"context"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// PublishDesired publishes a device's desired state again, with a new
// revision: after its assignment changed, or to renew the director's
// signatures before they expire.
func (r *Registry) PublishDesired(ctx context.Context, id string) { r.publishDesired(ctx, id) }

// publishDesired publishes a device's desired state, retained, with a new
// revision: the director's signed metadata (Config.DirectorMetadata) and
// the unsigned hints (labels, heartbeat interval).
// A failure is logged, not returned: the next change or a resync publishes
// again, and the retained message is always the newest revision.
func (r *Registry) publishDesired(ctx context.Context, id string) {
	if r.cfg.Publisher == nil {
		return
	}
	d, err := r.cfg.Store.Device(ctx, id)
	if err != nil {
		r.log.Warn("desired state not published", "device", id, "err", err)
		return
	}
	rev, err := r.cfg.Store.NextDesiredRevision(ctx, id)
	if err != nil {
		r.log.Warn("desired state not published", "device", id, "err", err)
		return
	}
	var director map[string][]byte
	if r.cfg.DirectorMetadata != nil {
		if director, err = r.cfg.DirectorMetadata(ctx, id, rev); err != nil {
			r.metrics.Add("desired_publish_failed", 1)
			r.log.Warn("desired state not published: director", "device", id, "err", err)
			return
		}
	}
	m := &pb.DesiredState{
		DeviceId:         id,
		DirectorMetadata: director,
		Revision:         rev,
		IssuedAtMs:       r.nowMs(),
		Hints: &pb.DesiredHints{
			HeartbeatIntervalS: uint32(r.cfg.HeartbeatInterval.Seconds()),
			Labels:             d.Labels,
		},
	}
	b, err := wire.Encode(m)
	if err == nil {
		e := topic.MustLookup(topic.Desired)
		err = r.cfg.Publisher.Publish(ctx, r.cfg.Scheme.Device(topic.Desired, id), e.QoS, e.Retained, b)
	}
	if err != nil {
		r.metrics.Add("desired_publish_failed", 1)
		r.log.Warn("desired state not published", "device", id, "err", err)
	}
}

// DeviceLister pages through active devices.
type DeviceLister interface {
	ListDevices(ctx context.Context, opts store.ListOptions) ([]store.Device, error)
}

// RepublishDesired publishes every active device's desired state again. The
// embedded broker keeps retained messages in memory only, so after a
// restart the control plane restores them; it returns how many it
// published.
func (r *Registry) RepublishDesired(ctx context.Context, l DeviceLister) (int, error) {
	n, after := 0, ""
	for {
		page, err := l.ListDevices(ctx, store.ListOptions{Limit: 500, After: after})
		if err != nil {
			return n, err
		}
		for _, d := range page {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			r.publishDesired(ctx, d.ID)
			n++
		}
		if len(page) < 500 {
			return n, nil
		}
		after = page[len(page)-1].ID
	}
}
