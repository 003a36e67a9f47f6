package agent

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// message encodes m for the device's topic of kind k, with the QoS and
// retain flag the topic table gives it.
func (s *session) message(k topic.Kind, m proto.Message) (Message, error) {
	e := topic.MustLookup(k)
	b, err := wire.Encode(m)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s: %w", k, err)
	}
	return Message{Topic: s.scheme.Device(k, s.id.DeviceID), Payload: b, QoS: e.QoS, Retained: e.Retained}, nil
}

func (s *session) publish(ctx context.Context, conn Conn, k topic.Kind, m proto.Message) error {
	msg, err := s.message(k, m)
	if err != nil {
		return err
	}
	if err := conn.Publish(ctx, msg); err != nil {
		s.a.count(CounterPublishErrors)
		return fmt.Errorf("publish %s: %w", k, err)
	}
	s.a.count(CounterPublished)
	s.a.contact()
	return nil
}

func (s *session) nowMS() int64 { return s.a.clock.Now().UnixMilli() }

func (s *session) statusMessage(st flotillapb.Status_State, reason string) (Message, error) {
	return s.message(topic.Status, &flotillapb.Status{
		DeviceId: s.id.DeviceID, State: st, SentAtMs: s.nowMS(), Session: s.a.session, Reason: reason,
	})
}

func (s *session) publishStatus(ctx context.Context, conn Conn, st flotillapb.Status_State, reason string) error {
	msg, err := s.statusMessage(st, reason)
	if err != nil {
		return err
	}
	if err := conn.Publish(ctx, msg); err != nil {
		s.a.count(CounterPublishErrors)
		return fmt.Errorf("publish status: %w", err)
	}
	s.a.count(CounterPublished)
	s.a.contact()
	return nil
}

func (s *session) publishBirth(ctx context.Context, conn Conn) error {
	labels := s.a.liveConfig().Labels
	err := s.publish(ctx, conn, topic.Birth, &flotillapb.Birth{
		DeviceId:        s.id.DeviceID,
		AgentVersion:    s.a.cfg.Version,
		ProtocolVersion: wire.ProtocolVersion,
		Facts:           s.a.facts(),
		Labels:          labels,
		BootTimeMs:      s.a.started.UnixMilli(),
		SentAtMs:        s.nowMS(),
		Session:         s.a.session,
	})
	if err == nil {
		s.labels = labels
	}
	return err
}

func (s *session) publishHeartbeat(ctx context.Context, conn Conn) error {
	a := s.a
	err := s.publish(ctx, conn, topic.Heartbeat, &flotillapb.Heartbeat{
		DeviceId:          s.id.DeviceID,
		SentAtMs:          s.nowMS(),
		UptimeMs:          uint64(max(0, a.clock.Now().Sub(a.started).Milliseconds())),
		Session:           a.session,
		DesiredRevision:   a.Status().DesiredRevision,
		MalformedMessages: a.counter(CounterMalformed),
		Reconnects:        a.counter(CounterReconnects),
	})
	if err == nil {
		a.count(CounterHeartbeats)
	}
	return err
}

// publishReported reports what the device runs, answering the accepted
// desired revision: per model, what is active and how it fares
// (agent/lifecycle, with Config.Models), what is staged and the last
// refusal (agent/install).
func (s *session) publishReported(ctx context.Context, conn Conn) error {
	models := s.stage.models()
	if s.models != nil {
		models = s.models.report(models)
	}
	return s.publish(ctx, conn, topic.Reported, &flotillapb.ReportedState{
		DeviceId:        s.id.DeviceID,
		SentAtMs:        s.nowMS(),
		DesiredRevision: s.a.Status().DesiredRevision,
		AgentVersion:    s.a.cfg.Version,
		Models:          models,
	})
}
