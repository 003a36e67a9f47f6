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
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// ProtocolVersion is the version of the wire protocol this build speaks;
// docs/protocol.md has its history. Agents send it in their birth message.
const ProtocolVersion = 3

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
//
// A fresh (empty) target is decoded into directly and reset on error, which
// leaves it as it was; a target holding data is decoded into a scratch
// message first and copied over only on success.
func Decode(data []byte, limit int, m proto.Message) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), limit)
	}
	if proto.Size(m) == 0 {
		if err := decodeInto(data, m); err != nil {
			proto.Reset(m)
			return err
		}
		return nil
	}
	tmp := m.ProtoReflect().New().Interface()
	if err := decodeInto(data, tmp); err != nil {
		return err
	}
	proto.Reset(m)
	proto.Merge(m, tmp)
	return nil
}

// decodeInto unmarshals data into the empty message m and checks it: wire
// types, then Validate. On error m holds partial data.
func decodeInto(data []byte, m proto.Message) error {
	name := m.ProtoReflect().Descriptor().FullName()
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
	}
	if err := checkWireTypes(data, m.ProtoReflect().Descriptor()); err != nil {
		return err
	}
	if v, ok := m.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
		}
	}
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

// checkWireTypes walks the encoded message b of descriptor md (already
// parsed successfully by proto.Unmarshal) and refuses a known field sent
// with a wire type other than its declaration's. protobuf-go would keep such
// a field among the unknown fields, where it would pass silently; for a map
// entry's key or value it would drop it. Repeated scalars may come packed
// or not, as protobuf allows. The walk reads the bytes and allocates
// nothing.
func checkWireTypes(b []byte, md protoreflect.MessageDescriptor) error {
	fields := fieldsOf(md)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %s: bad field tag", ErrMalformed, md.FullName())
		}
		b = b[n:]
		f := fields.lookup(md, num)
		if f.fd != nil && !f.fits(typ) {
			return fmt.Errorf("%w: %s.%s (field %d) sent as wire type %d",
				ErrWrongType, md.FullName(), f.fd.Name(), num, typ)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: %s: bad field %d", ErrMalformed, md.FullName(), num)
		}
		if f.msg != nil {
			var v []byte
			if typ == protowire.StartGroupType {
				v, _ = protowire.ConsumeGroup(num, b[:n])
			} else {
				v, _ = protowire.ConsumeBytes(b[:n])
			}
			if err := checkWireTypes(v, f.msg); err != nil {
				return err
			}
		}
		b = b[n:]
	}
	return nil
}

// fieldCheck is what checkWireTypes needs of one declared field: the wire
// types it may arrive as (a bit per type) and its message type, if any.
type fieldCheck struct {
	fd    protoreflect.FieldDescriptor
	types uint8
	msg   protoreflect.MessageDescriptor
}

func (f fieldCheck) fits(typ protowire.Type) bool { return typ < 8 && f.types&(1<<typ) != 0 }

// fieldTable holds a message's fieldChecks by field number, so that the
// walk finds each field by indexing a slice rather than by the
// descriptor's map lookup. Field numbers past the slice (rare) take the
// descriptor's lookup.
type fieldTable struct{ byNum []fieldCheck }

// maxTableField bounds a fieldTable's slice; messages number their fields
// densely from 1, far below this.
const maxTableField = 256

func (t *fieldTable) lookup(md protoreflect.MessageDescriptor, num protowire.Number) fieldCheck {
	if num >= 0 && int(num) < len(t.byNum) {
		return t.byNum[num]
	}
	if num < maxTableField {
		return fieldCheck{}
	}
	return checkOf(md.Fields().ByNumber(num))
}

// fieldTables caches each message descriptor's fieldTable.
var fieldTables sync.Map // protoreflect.MessageDescriptor -> *fieldTable

func fieldsOf(md protoreflect.MessageDescriptor) *fieldTable {
	if t, ok := fieldTables.Load(md); ok {
		return t.(*fieldTable)
	}
	t := &fieldTable{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Number() >= maxTableField {
			continue
		}
		for int(fd.Number()) >= len(t.byNum) {
			t.byNum = append(t.byNum, fieldCheck{})
		}
		t.byNum[fd.Number()] = checkOf(fd)
	}
	got, _ := fieldTables.LoadOrStore(md, t)
	return got.(*fieldTable)
}

func checkOf(fd protoreflect.FieldDescriptor) fieldCheck {
	if fd == nil {
		return fieldCheck{}
	}
	f := fieldCheck{fd: fd, msg: fd.Message()}
	for typ := protowire.Type(0); typ < 8; typ++ {
		if wireTypeFits(fd, typ) {
			f.types |= 1 << typ
		}
	}
	return f
}

// wireTypeFits reports whether a field declared as fd may arrive as wire
// type typ.
func wireTypeFits(fd protoreflect.FieldDescriptor, typ protowire.Type) bool {
	var want protowire.Type
	switch fd.Kind() {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Int64Kind,
		protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		want = protowire.VarintType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		want = protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		want = protowire.Fixed64Type
	case protoreflect.GroupKind:
		want = protowire.StartGroupType
	default: // string, bytes, message (map entries included)
		return typ == protowire.BytesType
	}
	// Repeated numeric fields may be packed into one length-delimited run.
	return typ == want || (fd.IsList() && typ == protowire.BytesType)
}
