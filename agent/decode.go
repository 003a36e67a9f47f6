package agent

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// errUnsupportedCommand reports a well-formed command of a kind this agent
// does not know; it is answered, not dropped.
var errUnsupportedCommand = errors.New("unsupported command")

// errOtherDevice reports a message addressed to another device.
var errOtherDevice = errors.New("message is for another device")

// decodeDesired decodes a desired state for device id.
func decodeDesired(id string, payload []byte) (*flotillapb.DesiredState, error) {
	var ds flotillapb.DesiredState
	if err := wire.DecodeTopic(topic.Desired, payload, &ds); err != nil {
		return nil, err
	}
	if ds.GetDeviceId() != id {
		return nil, fmt.Errorf("%w: desired state for %q", errOtherDevice, ds.GetDeviceId())
	}
	return &ds, nil
}

// decodeCommand decodes a command for device id. A command that is valid
// but of an unknown kind is returned with errUnsupportedCommand, so that it
// can be answered.
func decodeCommand(id string, payload []byte) (*flotillapb.Command, error) {
	var c flotillapb.Command
	err := wire.DecodeTopic(topic.Command, payload, &c)
	if errors.Is(err, wire.ErrInvalid) {
		// It parsed; see whether only the kind is missing (a newer kind).
		var raw flotillapb.Command
		if proto.Unmarshal(payload, &raw) == nil && raw.GetKind() == nil {
			raw.Kind = &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}} // stand-in, to validate the rest
			if raw.Validate() == nil && raw.GetDeviceId() == id {
				raw.Kind = nil
				return &raw, errUnsupportedCommand
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if c.GetDeviceId() != id {
		return nil, fmt.Errorf("%w: command for %q", errOtherDevice, c.GetDeviceId())
	}
	return &c, nil
}

// decodeAck decodes a telemetry acknowledgement for device id.
func decodeAck(id string, payload []byte) (*flotillapb.Ack, error) {
	var ack flotillapb.Ack
	if err := wire.DecodeTopic(topic.Ack, payload, &ack); err != nil {
		return nil, err
	}
	if ack.GetDeviceId() != id {
		return nil, fmt.Errorf("%w: ack for %q", errOtherDevice, ack.GetDeviceId())
	}
	return &ack, nil
}
