package telemetry

import (
	"errors"
	"fmt"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Limits on one device event, so a device cannot make the control plane
// store unbounded text (the topic's size limit bounds the message).
const (
	MaxEventCode    = 128
	MaxEventMessage = 4096
	MaxEventAttrs   = 32
	MaxEventAttr    = 1024 // bytes of one attribute's key or value
)

// validateEvents checks a batch of device events (nil: none).
func validateEvents(es *pb.Events) error {
	for i, e := range es.GetEvents() {
		if err := validateEvent(e); err != nil {
			return fmt.Errorf("events[%d]: %w", i, err)
		}
	}
	return nil
}

func validateEvent(e *pb.Event) error {
	switch e.GetLevel() {
	case "info", "warn", "error":
	default:
		return fmt.Errorf("level %q is not info, warn or error", e.GetLevel())
	}
	if e.GetCode() == "" || len(e.GetCode()) > MaxEventCode {
		return fmt.Errorf("code is required and at most %d bytes", MaxEventCode)
	}
	if e.GetAtMs() <= 0 {
		return errors.New("at_ms is required")
	}
	if len(e.GetMessage()) > MaxEventMessage {
		return fmt.Errorf("message over %d bytes", MaxEventMessage)
	}
	if len(e.GetAttrs()) > MaxEventAttrs {
		return fmt.Errorf("%d attrs, at most %d", len(e.GetAttrs()), MaxEventAttrs)
	}
	for k, v := range e.GetAttrs() {
		if k == "" || len(k) > MaxEventAttr || len(v) > MaxEventAttr {
			return fmt.Errorf("attr %.32q: keys 1 to %d bytes, values at most %d", k, MaxEventAttr, MaxEventAttr)
		}
	}
	return nil
}
