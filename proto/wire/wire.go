// Package wire encodes and decodes Flotilla's protobuf messages at the MQTT
// boundary, treating every inbound payload as hostile.
//
// Decode refuses a payload over the topic's size limit, a truncated or
// malformed one, a known field sent with the wrong wire type, and a message
// missing a required field, each with an error that says which; the target
// message is left unchanged on error. Unknown fields are kept, so a message
// from a newer agent passes through an older control plane intact.
package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// ProtocolVersion is the version of the wire protocol this build speaks;
// docs/protocol.md has its history. Agents send it in their birth message.
const ProtocolVersion = 2

// MinProtocolVersion is the oldest protocol version a control plane of this
// build still serves.
const MinProtocolVersion = 1

// Errors callers can branch on with errors.Is.
var (
	ErrTooLarge  = errors.New("message too large")
	ErrMalformed = errors.New("malformed message")
	ErrWrongType = errors.New("field has the wrong wire type")
	ErrInvalid   = errors.New("invalid message")
)

// Validator is implemented by messages with required fields or ranges.
type Validator interface {
	Validate() error
}

// Decode unmarshals data into m, refusing more than limit bytes. On error m
// is unchanged.
func Decode(data []byte, limit int, m proto.Message) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), limit)
	}
	tmp := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(data, tmp); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, m.ProtoReflect().Descriptor().FullName(), err)
	}
	if err := checkWireTypes(tmp.ProtoReflect()); err != nil {
		return err
	}
	if v, ok := tmp.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	proto.Reset(m)
	proto.Merge(m, tmp)
	return nil
}

// DecodeTopic is Decode with the size limit of the topic kind k.
func DecodeTopic(k topic.Kind, data []byte, m proto.Message) error {
	e := topic.MustLookup(k)
	if want := string(m.ProtoReflect().Descriptor().FullName()); e.Message != "" && want != e.Message {
		return fmt.Errorf("topic %s carries %s, not %s", k, e.Message, want)
	}
	return Decode(data, e.MaxSize, m)
}

// Encode marshals m deterministically, so equal messages give equal bytes.
func Encode(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// checkWireTypes walks m and its nested messages. protobuf-go keeps a field
// whose wire type does not match its declaration as an unknown field; a
// field number that the descriptor knows but that sits among the unknown
// fields was therefore sent with the wrong type, which we refuse.
func checkWireTypes(m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	unknown := m.GetUnknown()
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return fmt.Errorf("%w: %s: bad unknown field", ErrMalformed, m.Descriptor().FullName())
		}
		if fd := fields.ByNumber(num); fd != nil {
			return fmt.Errorf("%w: %s.%s (field %d) sent as wire type %d",
				ErrWrongType, m.Descriptor().FullName(), fd.Name(), num, typ)
		}
		unknown = unknown[n:]
		m := protowire.ConsumeFieldValue(num, typ, unknown)
		if m < 0 {
			return fmt.Errorf("%w: bad unknown field %d", ErrMalformed, num)
		}
		unknown = unknown[m:]
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					err = checkWireTypes(mv.Message())
					return err == nil
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len() && err == nil; i++ {
					err = checkWireTypes(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			err = checkWireTypes(v.Message())
		}
		return err == nil
	})
	return err
}
