package agent

import "sync"

// inboxLimit bounds the messages waiting to be handled; beyond it new ones
// are dropped and counted. The control plane sends a device little, so
// reaching it means something is wrong upstream.
const inboxLimit = 1024

// inbox hands inbound messages from the MQTT client's goroutine to the
// session's without ever blocking the client (a blocked paho handler would
// stall the acknowledgements the session waits for).
type inbox struct {
	mu      sync.Mutex
	msgs    []Message
	ready   chan struct{} // has a value while msgs is non-empty
	dropped func()
}

func newInbox() *inbox { return &inbox{ready: make(chan struct{}, 1)} }

func (b *inbox) push(topic string, payload []byte) {
	b.mu.Lock()
	if len(b.msgs) >= inboxLimit {
		b.mu.Unlock()
		if b.dropped != nil {
			b.dropped()
		}
		return
	}
	b.msgs = append(b.msgs, Message{Topic: topic, Payload: payload})
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

func (b *inbox) drain() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.msgs
	b.msgs = nil
	return m
}
