package agenttest

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// WaitTimeout bounds every wait for a message.
const WaitTimeout = 15 * time.Second

// Received is a message seen by the broker under the scheme's prefix.
type Received struct {
	Seq      int // position in the record, from 0
	Topic    string
	Payload  []byte
	Retained bool
}

func (s *Server) record(topic string, payload []byte, retained bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, Received{Seq: len(s.msgs), Topic: topic, Payload: slices.Clone(payload), Retained: retained})
	close(s.notify)
	s.notify = make(chan struct{})
}

// Mark returns the position of the next message to be recorded, for
// waiting on messages that come after it.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Messages returns a copy of every message recorded so far.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Wait returns the first message recorded at or after position since for
// which match is true, failing the test after WaitTimeout. match runs with
// the record locked: it must not call the Server.
func (s *Server) Wait(since int, match func(Received) bool) Received {
	s.t.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, m := range s.msgs[min(since, len(s.msgs)):] {
			if match(m) {
				s.mu.Unlock()
				return m
			}
		}
		since = len(s.msgs)
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			s.t.Fatalf("agenttest: no matching message within %v", WaitTimeout)
			return Received{}
		}
	}
}

// WaitFor waits for a message of kind k from device id, recorded at or after
// since, that decodes as M and satisfies match (nil matches any).
func WaitFor[M any, P interface {
	*M
	proto.Message
}](s *Server, since int, id string, k topic.Kind, match func(P) bool) P {
	s.t.Helper()
	want := s.scheme.Device(k, id)
	var got P
	s.Wait(since, func(r Received) bool {
		if r.Topic != want {
			return false
		}
		m := P(new(M))
		if err := wire.DecodeTopic(k, r.Payload, m); err != nil {
			return false
		}
		if match == nil || match(m) {
			got = m
			return true
		}
		return false
	})
	return got
}

// Retained returns the payload retained on topic, or nil.
func (s *Server) Retained(topic string) []byte {
	b := s.mqttServer()
	if b == nil {
		return nil
	}
	for _, pk := range b.Topics.Messages(topic) {
		return pk.Payload
	}
	return nil
}

// RetainedStatus decodes device id's retained status, or returns nil.
func (s *Server) RetainedStatus(id string) *flotillapb.Status {
	b := s.Retained(s.scheme.Device(topic.Status, id))
	if b == nil {
		return nil
	}
	var st flotillapb.Status
	if wire.DecodeTopic(topic.Status, b, &st) != nil {
		return nil
	}
	return &st
}

// Publish publishes payload on topic as the control plane, bypassing the ACL.
func (s *Server) Publish(topic string, payload []byte, retained bool) {
	s.t.Helper()
	b := s.mqttServer()
	if b == nil {
		s.t.Fatal("agenttest: broker is stopped")
	}
	if err := b.Publish(topic, payload, retained, 1); err != nil {
		s.t.Fatal(err)
	}
}

// PublishDesired publishes ds (retained) on its device's desired topic.
func (s *Server) PublishDesired(ds *flotillapb.DesiredState) {
	s.t.Helper()
	s.Publish(s.scheme.Device(topic.Desired, ds.GetDeviceId()), s.encode(ds), true)
}

// PublishCommand publishes c on its device's command topic.
func (s *Server) PublishCommand(c *flotillapb.Command) {
	s.t.Helper()
	s.Publish(s.scheme.Device(topic.Command, c.GetDeviceId()), s.encode(c), false)
}

// PublishAck publishes a on its device's ack topic.
func (s *Server) PublishAck(a *flotillapb.Ack) {
	s.t.Helper()
	s.Publish(s.scheme.Device(topic.Ack, a.GetDeviceId()), s.encode(a), false)
}

func (s *Server) encode(m proto.Message) []byte {
	s.t.Helper()
	b, err := wire.Encode(m)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}
