package diag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// ErrNotRunning is returned by Call when nothing answers on the socket:
// the agent is not running (or not with this data folder).
var ErrNotRunning = errors.New("the agent is not running (nothing answers on its diag socket)")

// Call sends req to the agent at socket and decodes its answer's data
// into out (nil to ignore it). An error answer is returned as an error.
func Call(ctx context.Context, socket string, req Request, out any) error {
	req.V = ProtocolVersion
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %s", ErrNotRunning, socket)
		}
		return fmt.Errorf("diag: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if len(b) > MaxRequest {
		return fmt.Errorf("diag: request over %d bytes", MaxRequest)
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("diag: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(c, MaxResponse+1))
	if err != nil {
		return fmt.Errorf("diag: %w", err)
	}
	if len(raw) > MaxResponse {
		return fmt.Errorf("diag: answer over %d bytes", MaxResponse)
	}
	var resp Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("diag: answer is not JSON: %w", err)
	}
	if resp.V != ProtocolVersion {
		return fmt.Errorf("diag: the agent speaks protocol %d, this client %d", resp.V, ProtocolVersion)
	}
	if !resp.OK {
		return fmt.Errorf("agent: %s", resp.Error)
	}
	if out != nil && len(resp.Data) > 0 {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			return fmt.Errorf("diag: answer's data: %w", err)
		}
	}
	return nil
}
