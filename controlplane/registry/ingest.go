package registry

import (
	"context"
	"errors"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// Subscriptions returns the filters the control plane subscribes to for
// ingest. Retained topics use plain subscriptions (a shared subscription
// gets no retained messages, and every replica wants the latest state);
// heartbeats use a shared subscription of group, so replicas split them.
// Command results are plain too: only the replica that sent a command
// waits for its answer, so every replica must see every answer (dealt to
// another replica, it would be lost and the command time out); they come
// only in reply to an operator's command, so the copies cost nothing.
func (r *Registry) Subscriptions(group string) []string {
	s := r.cfg.Scheme
	return []string{
		s.AllDevices(topic.Birth),
		s.AllDevices(topic.Status),
		s.AllDevices(topic.Reported),
		topic.Shared(group, s.AllDevices(topic.Heartbeat)),
		s.AllDevices(topic.CommandResult),
	}
}

// HandleMessage takes in one message a device published. It never fails:
// a message that is malformed, names another device than its topic, or
// comes from an unknown or decommissioned device is logged, counted and
// dropped without changing anything.
func (r *Registry) HandleMessage(ctx context.Context, name string, payload []byte) {
	k, id, ok := r.cfg.Scheme.Parse(name)
	if !ok {
		r.drop("unknown topic", name, nil)
		return
	}
	if len(payload) == 0 {
		return // a cleared retained message
	}
	var err error
	switch k {
	case topic.Birth:
		err = r.handleBirth(ctx, id, payload)
	case topic.Status:
		err = r.handleStatus(ctx, id, payload)
	case topic.Heartbeat:
		err = r.handleHeartbeat(ctx, id, payload)
	case topic.Reported:
		err = r.handleReported(ctx, id, payload)
	case topic.CommandResult:
		err = r.handleCommandResult(id, payload)
	default:
		return // ours, or another component's
	}
	if err != nil {
		r.drop(err.Error(), name, err)
		return
	}
	r.metrics.Add("ingested", 1)
}

var errOtherDevice = errors.New("device_id does not match the topic")

func (r *Registry) drop(reason, name string, err error) {
	if err != nil && (isNotFound(err) || errors.Is(err, store.ErrInvalid)) {
		r.metrics.Add("dropped_unknown_device", 1)
		r.log.Debug("message from unknown or decommissioned device dropped", "topic", name, "err", err)
		return
	}
	r.metrics.Add("dropped_malformed", 1)
	r.log.Warn("device message dropped", "topic", name, "reason", reason)
}

func (r *Registry) handleBirth(ctx context.Context, id string, payload []byte) error {
	var m pb.Birth
	if err := wire.DecodeTopic(topic.Birth, payload, &m); err != nil {
		return err
	}
	if m.GetDeviceId() != id {
		return errOtherDevice
	}
	if v := m.GetProtocolVersion(); v < wire.MinProtocolVersion {
		r.log.Warn("device speaks an old protocol version", "device", id, "version", v, "min", wire.MinProtocolVersion)
	}
	var facts []byte
	if m.GetFacts() != nil {
		var err error
		if facts, err = wire.Encode(m.GetFacts()); err != nil {
			return err
		}
	}
	return r.cfg.Store.RecordBirth(ctx, id, facts, m.GetAgentVersion(), m.GetProtocolVersion(), r.nowMs())
}

// handleStatus orders status changes by when the control plane receives
// them, not by the device's clock: the broker delivers one topic's messages
// in order, and a last will carries the time it was registered (connect),
// not the time the connection died.
func (r *Registry) handleStatus(ctx context.Context, id string, payload []byte) error {
	var m pb.Status
	if err := wire.DecodeTopic(topic.Status, payload, &m); err != nil {
		return err
	}
	if m.GetDeviceId() != id {
		return errOtherDevice
	}
	online := m.GetState() == pb.Status_STATE_ONLINE
	changed, err := r.cfg.Store.SetStatus(ctx, id, online, r.nowMs())
	if err == nil && changed {
		r.log.Info("device status", "device", id, "online", online, "reason", m.GetReason())
	}
	return err
}

func (r *Registry) handleHeartbeat(ctx context.Context, id string, payload []byte) error {
	var m pb.Heartbeat
	if err := wire.DecodeTopic(topic.Heartbeat, payload, &m); err != nil {
		return err
	}
	if m.GetDeviceId() != id {
		return errOtherDevice
	}
	return r.cfg.Store.Touch(ctx, id, r.nowMs())
}

func (r *Registry) handleReported(ctx context.Context, id string, payload []byte) error {
	var m pb.ReportedState
	if err := wire.DecodeTopic(topic.Reported, payload, &m); err != nil {
		return err
	}
	if m.GetDeviceId() != id {
		return errOtherDevice
	}
	// The model lifecycle issue stores what the device runs; for now a
	// report is a sign of life.
	return r.cfg.Store.Touch(ctx, id, r.nowMs())
}
