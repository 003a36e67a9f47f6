package console

import (
	"fmt"
	"net/http"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// deployment is where a released bundle went: the rollouts of its model
// release and their devices.
type deployment struct {
	Rollout api.RolloutView
	Devices int
}

type bundleRow struct {
	api.ReleasedBundle
	Deployed []deployment
}

func (c *Console) bundles(w http.ResponseWriter, r *http.Request, u user) {
	cl := c.client(u)
	list, err := cl.ListBundles(r.Context())
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	ros, err := cl.ListRollouts(r.Context(), "", "", 1000)
	if err != nil && !unavailable(err) {
		c.apiError(w, r, u, err)
		return
	}
	by := map[string][]deployment{}
	for _, ro := range ros {
		n := 0
		for _, k := range ro.Devices {
			n += k
		}
		key := fmt.Sprintf("%s/%d", ro.Model, ro.Release)
		by[key] = append(by[key], deployment{Rollout: ro, Devices: n})
	}
	rows := make([]bundleRow, 0, len(list.Bundles))
	for _, b := range list.Bundles {
		rows = append(rows, bundleRow{ReleasedBundle: b, Deployed: by[fmt.Sprintf("%s/%d", b.Model, b.Release)]})
	}
	c.render(w, r, http.StatusOK, "bundles", u, map[string]any{"List": list, "Rows": rows})
}
