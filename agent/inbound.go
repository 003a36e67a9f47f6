package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// handle dispatches one inbound message. Nothing here may fail the session:
// a bad message is logged, counted and dropped.
func (s *session) handle(ctx context.Context, conn Conn, m Message) {
	s.a.count(CounterReceived)
	s.a.contact()
	kind, id, ok := s.scheme.Parse(m.Topic)
	if ok && kind == topic.ReleaseMeta {
		s.onReleaseMeta(m)
		return
	}
	if !ok || id != s.id.DeviceID {
		s.drop(m, errors.New("not one of this device's topics"))
		return
	}
	switch kind {
	case topic.Desired:
		s.onDesired(ctx, conn, m)
	case topic.Command:
		s.onCommand(ctx, conn, m)
	case topic.Ack:
		s.onAck(m)
	case topic.SupportAck:
		s.onSupportAck(m)
	default:
		s.drop(m, fmt.Errorf("unexpected topic kind %s", kind))
	}
}

func (s *session) drop(m Message, err error) {
	s.a.count(CounterMalformed)
	s.a.log.Warn("dropped inbound message", "topic", m.Topic, "bytes", len(m.Payload), "err", err)
}

func (s *session) onDesired(ctx context.Context, conn Conn, m Message) {
	if len(m.Payload) == 0 {
		// An empty retained payload clears the desired topic: nothing to do.
		s.a.log.Info("desired state cleared on the broker; keeping the accepted one")
		return
	}
	ds, err := decodeDesired(s.id.DeviceID, m.Payload)
	if err != nil {
		s.drop(m, err)
		return
	}
	cur := s.a.Status().DesiredRevision
	if ds.GetRevision() >= cur {
		s.applyHints(ds.GetHints())
		s.stage.setDirector(ds.GetDirectorMetadata())
	}
	switch rev := ds.GetRevision(); {
	case rev == cur:
		s.a.log.Debug("desired state already accepted", "revision", rev)
		return
	case rev < cur:
		s.a.count(CounterDesiredStale)
		s.a.log.Warn("ignored stale desired state", "revision", rev, "accepted", cur)
		return
	}
	stored, err := s.db.AcceptDesired(ctx, ds.GetRevision(), m.Payload, s.a.clock.Now())
	if err != nil {
		s.a.log.Error("store desired state", "err", err)
		return
	}
	if !stored {
		s.a.count(CounterDesiredStale)
		return
	}
	s.a.count(CounterDesiredAccepted)
	s.a.update(func(st *Status) { st.DesiredRevision = ds.GetRevision() })
	s.a.journal(ctx, s.db, "info", "desired.accepted", fmt.Sprintf("revision %d", ds.GetRevision()))
	s.a.log.Info("accepted desired state", "revision", ds.GetRevision())
	if err := s.publishReported(ctx, conn); err != nil {
		s.a.log.Warn("publish reported state", "err", err)
	}
}

func (s *session) onCommand(ctx context.Context, conn Conn, m Message) {
	c, err := decodeCommand(s.id.DeviceID, m.Payload)
	res := &flotillapb.CommandResult{DeviceId: s.id.DeviceID, Ok: true}
	switch {
	case errors.Is(err, errUnsupportedCommand):
		res.Ok, res.Error = false, "unsupported command"
	case err != nil:
		s.drop(m, err)
		return
	}
	res.CommandId = c.GetId()
	s.a.noteIssued(c.GetIssuedAtMs())
	if exp := c.GetExpiresAtMs(); exp != 0 && s.nowMS() > exp {
		s.a.count(CounterCommandsExpired)
		s.a.log.Info("ignored expired command", "id", c.GetId())
		return
	}
	switch k := c.GetKind().(type) {
	case *flotillapb.Command_Ping:
	case *flotillapb.Command_Resync:
		if err := s.resync(ctx, conn); err != nil {
			res.Ok, res.Error = false, err.Error()
		}
	case *flotillapb.Command_Diag:
		out, err := s.a.remoteDiag(ctx, k.Diag)
		if err != nil {
			res.Ok, res.Error = false, clipText(err.Error())
		}
		res.Output = out
	case *flotillapb.Command_SupportBundle:
		out, err := s.startSupportUpload(ctx, k.SupportBundle)
		if err != nil {
			res.Ok, res.Error = false, clipText(err.Error())
		}
		res.Output = out
	}
	res.FinishedAtMs = s.nowMS()
	s.a.count(CounterCommands)
	if err := s.publish(ctx, conn, topic.CommandResult, res); err != nil {
		s.a.log.Warn("publish command result", "err", err)
	}
}

// resync republishes birth, status and reported state.
func (s *session) resync(ctx context.Context, conn Conn) error {
	if err := s.announce(ctx, conn); err != nil {
		return err
	}
	return s.publishReported(ctx, conn)
}

// onAck hands a telemetry acknowledgement to the telemetry goroutine.
func (s *session) onAck(m Message) {
	ack, err := decodeAck(s.id.DeviceID, m.Payload)
	if err != nil {
		s.drop(m, err)
		return
	}
	s.a.count(CounterAcks)
	if s.buf != nil {
		s.queueAck(ack)
	}
}

// Bounds on the heartbeat interval a desired state may hint: a wrong hint
// must neither flood the broker nor make a device look dead.
const (
	minHeartbeatHint = 5 * time.Second
	maxHeartbeatHint = time.Hour
)

// applyHints takes the unsigned hints of the current desired state (also
// when it is the retained copy of one already accepted, so a hint survives
// an agent restart). Hints grant nothing; out-of-range ones are ignored.
func (s *session) applyHints(h *flotillapb.DesiredHints) {
	s.hints = h
	want := s.a.liveConfig().HeartbeatInterval
	if secs := h.GetHeartbeatIntervalS(); secs != 0 {
		d := time.Duration(secs) * time.Second
		if d < minHeartbeatHint || d > maxHeartbeatHint {
			s.a.log.Warn("ignored heartbeat hint out of range", "hint", d, "min", minHeartbeatHint, "max", maxHeartbeatHint)
		} else {
			want = d
		}
	}
	if want != s.heartbeat {
		s.a.log.Info("heartbeat interval", "interval", want)
		s.heartbeat, s.rearm = want, true
	}
}
