package console

import (
	"net/http"
	"net/url"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// admin lists console users, API tokens and bootstrap tokens, with forms
// to add and remove them. The API refuses all of it below the admin role;
// the page only says so.
func (c *Console) admin(w http.ResponseWriter, r *http.Request, u user) {
	c.renderAdmin(w, r, u, http.StatusOK, nil)
}

func (c *Console) renderAdmin(w http.ResponseWriter, r *http.Request, u user, status int, extra map[string]any) {
	cl := c.client(u)
	ctx := r.Context()
	users, err := cl.ListUsers(ctx)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	toks, err := cl.ListAPITokens(ctx)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	etoks, err := cl.ListEnrolTokens(ctx)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	data := map[string]any{"Users": users, "Tokens": toks, "EnrolTokens": etoks}
	for k, v := range extra {
		data[k] = v
	}
	c.render(w, r, status, "admin", u, data)
}

func (c *Console) adminAct(w http.ResponseWriter, r *http.Request, u user) {
	cl := c.client(u)
	ctx := r.Context()
	f := r.PostForm
	var err error
	extra := map[string]any{}
	switch r.PathValue("what") {
	case "user-create":
		_, err = cl.CreateUser(ctx, api.UserRequest{Name: f.Get("name"), Role: f.Get("role"), Password: f.Get("password")})
	case "user-role":
		_, err = cl.UpdateUser(ctx, f.Get("name"), api.UserPatch{Role: f.Get("role")})
	case "user-disable":
		err = cl.DisableUser(ctx, f.Get("name"))
	case "token-create":
		var t api.APITokenCreated
		if t, err = cl.CreateAPIToken(ctx, api.APITokenRequest{Name: f.Get("name"), Role: f.Get("role"), TTL: f.Get("ttl")}); err == nil {
			// The secret is shown once, in this answer only.
			extra["NewToken"] = t
		}
	case "token-revoke":
		err = cl.RevokeAPIToken(ctx, f.Get("id"))
	case "enrol-token-revoke":
		err = cl.RevokeEnrolToken(ctx, f.Get("id"))
	default:
		http.Error(w, "unknown action", http.StatusNotFound)
		return
	}
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	if len(extra) > 0 {
		c.renderAdmin(w, r, u, http.StatusOK, extra)
		return
	}
	http.Redirect(w, r, "/admin?done="+url.QueryEscape(r.PathValue("what")), http.StatusSeeOther)
}
