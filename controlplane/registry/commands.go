package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

type commandResult struct {
	res *pb.CommandResult
	at  time.Time
}

// CommandReply is what a device answered to a command.
type CommandReply struct {
	OK        bool          `json:"ok"`
	Error     string        `json:"error,omitempty"`
	RoundTrip time.Duration `json:"round_trip_ns"`
	// Output is the device's answer to a diag command (JSON, at most
	// 64 KiB); nil for other commands or output that is not JSON.
	Output json.RawMessage `json:"output,omitempty"`
}

// CommandOptions are a command's arguments: the filters of diag-logs.
type CommandOptions struct {
	Level    string // least level: debug, info, warn, error
	Contains string // substring
	Limit    uint32 // newest n records
	// UploadID and MaxSize are support-bundle's: the upload the control
	// plane expects (controlplane/supportbundle) and its size limit.
	UploadID string
	MaxSize  uint64
}

// Command sends a command (ping, resync, diag-status or diag-logs) to an
// active device and waits for its answer until ctx ends.
func (r *Registry) Command(ctx context.Context, actor, id, kind string) (CommandReply, error) {
	return r.CommandWith(ctx, actor, id, kind, CommandOptions{})
}

// CommandWith is Command with arguments.
func (r *Registry) CommandWith(ctx context.Context, actor, id, kind string, opt CommandOptions) (CommandReply, error) {
	d, err := r.cfg.Store.Device(ctx, id)
	if err != nil {
		return CommandReply{}, storeError(err)
	}
	if !d.Active() {
		return CommandReply{}, fmt.Errorf("%w: device %s is decommissioned", ErrNotFound, id)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	cmd := &pb.Command{Id: hex.EncodeToString(b), DeviceId: id, IssuedAtMs: r.nowMs()}
	if dl, ok := ctx.Deadline(); ok {
		cmd.ExpiresAtMs = dl.UnixMilli()
	}
	switch kind {
	case "ping":
		cmd.Kind = &pb.Command_Ping{Ping: &pb.Ping{}}
	case "resync":
		cmd.Kind = &pb.Command_Resync{Resync: &pb.Resync{}}
	case "diag-status":
		cmd.Kind = &pb.Command_Diag{Diag: &pb.Diag{What: "status"}}
	case "diag-logs":
		cmd.Kind = &pb.Command_Diag{Diag: &pb.Diag{What: "logs", Level: opt.Level, Contains: opt.Contains, Limit: opt.Limit}}
	case "support-bundle":
		cmd.Kind = &pb.Command_SupportBundle{SupportBundle: &pb.SupportBundle{UploadId: opt.UploadID, MaxSize: opt.MaxSize}}
	default:
		return CommandReply{}, fmt.Errorf("%w: unknown command %q (ping, resync, diag-status, diag-logs, support-bundle)", ErrInvalid, kind)
	}
	if err := cmd.Validate(); err != nil {
		return CommandReply{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	payload, err := wire.Encode(cmd)
	if err != nil {
		return CommandReply{}, err
	}
	ch := make(chan commandResult, 1)
	r.mu.Lock()
	r.waiters[cmd.Id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, cmd.Id)
		r.mu.Unlock()
	}()
	if r.cfg.Publisher == nil {
		return CommandReply{}, fmt.Errorf("%w: no broker connection", ErrUnavailable)
	}
	sent := time.Now()
	e := topic.MustLookup(topic.Command)
	if err := r.cfg.Publisher.Publish(ctx, r.cfg.Scheme.Device(topic.Command, id), e.QoS, e.Retained, payload); err != nil {
		return CommandReply{}, fmt.Errorf("%w: publish command: %w", ErrUnavailable, err)
	}
	if kind == "resync" {
		r.publishDesired(ctx, id)
	}
	r.audit(ctx, actor, "device.command."+kind, id, "")
	select {
	case res := <-ch:
		rep := CommandReply{OK: res.res.GetOk(), Error: res.res.GetError(), RoundTrip: res.at.Sub(sent)}
		if out := res.res.GetOutput(); len(out) > 0 && json.Valid(out) {
			rep.Output = out
		}
		return rep, nil
	case <-ctx.Done():
		return CommandReply{}, fmt.Errorf("%w: no answer from %s: %w", ErrUnavailable, id, ctx.Err())
	}
}

func (r *Registry) handleCommandResult(id string, payload []byte) error {
	var m pb.CommandResult
	if err := wire.DecodeTopic(topic.CommandResult, payload, &m); err != nil {
		return err
	}
	if m.GetDeviceId() != id {
		return errOtherDevice
	}
	r.mu.Lock()
	ch := r.waiters[m.GetCommandId()]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- commandResult{res: &m, at: time.Now()}:
		default:
		}
	}
	return nil
}
