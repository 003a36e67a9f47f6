package diag

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Remote answers a diag command from the control plane (remote help):
// the same status and logs the socket serves, as JSON within
// agent.MaxCommandOutput. Logs are cut from the oldest record to fit; a
// status over the limit loses its recent errors and counters first.
// Only reading commands are served remotely: a rollback or resync from
// the control plane goes through its own channels.
func (s *Server) Remote(ctx context.Context, d *flotillapb.Diag) ([]byte, error) {
	s.cfg.Logger.Info("diagnostics asked by the control plane", "what", d.GetWhat())
	switch d.GetWhat() {
	case CmdStatus:
		r := liveStatus(ctx, s.cfg.Agent, s.cfg.Logs)
		b, err := json.Marshal(r)
		if err == nil && len(b) > agent.MaxCommandOutput {
			r.RecentErrors, r.Counters = []Event{}, nil
			r.Problems = append(r.Problems, "recent errors and counters left out to fit the answer")
			b, err = json.Marshal(r)
		}
		if err != nil {
			return nil, err
		}
		if len(b) > agent.MaxCommandOutput {
			return nil, fmt.Errorf("status is %d bytes, over %d", len(b), agent.MaxCommandOutput)
		}
		return b, nil
	case CmdLogs:
		v, err := s.logs(Request{Cmd: CmdLogs, Level: d.GetLevel(), Contains: d.GetContains(), Limit: int(d.GetLimit())})
		if err != nil {
			return nil, err
		}
		r := v.(LogsReport)
		for {
			b, err := json.Marshal(r)
			if err != nil {
				return nil, err
			}
			if len(b) <= agent.MaxCommandOutput {
				return b, nil
			}
			// Cut the oldest tenth (at least one) and try again.
			n := max(1, len(r.Entries)/10)
			r.Entries, r.Cut = r.Entries[n:], r.Cut+n
		}
	}
	return nil, fmt.Errorf("diag %q is not served remotely (status, logs)", d.GetWhat())
}
