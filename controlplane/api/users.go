package api

import (
	"net/http"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/password"
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// UserRequest creates a console user.
type UserRequest struct {
	Name     string `json:"name" doc:"1 to 64 letters, digits or . _ -"`
	Role     string `json:"role" doc:"viewer, operator or admin"`
	Password string `json:"password" doc:"8 to 1024 bytes; stored only as an argon2id hash"`
}

// UserPatch changes a console user; empty fields are left as they are.
type UserPatch struct {
	Role     string `json:"role,omitempty"`
	Password string `json:"password,omitempty"`
}

// UserView describes a console user without its password hash.
type UserView struct {
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	CreatedAt   time.Time  `json:"created_at"`
	DisabledAt  *time.Time `json:"disabled_at,omitempty"`
	LastLoginAt *time.Time `json:"last_login_at,omitempty"`
}

func userView(u store.ConsoleUser) UserView {
	return UserView{Name: u.Name, Role: u.Role, CreatedAt: time.UnixMilli(u.CreatedAt).UTC(),
		DisabledAt: msTime(u.DisabledAt), LastLoginAt: msTime(u.LastLoginAt)}
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request) {
	us, err := a.cfg.Store.ListUsers(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]UserView, 0, len(us))
	for _, u := range us {
		out = append(out, userView(u))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := ParseRole(req.Role); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	hash, err := password.Hash(req.Password)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u := store.ConsoleUser{Name: req.Name, Role: req.Role, PasswordHash: hash, CreatedAt: a.cfg.Now().UnixMilli()}
	if err := a.cfg.Store.CreateUser(r.Context(), u); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "user.create", "user/"+u.Name, "role="+u.Role)
	writeJSON(w, http.StatusCreated, userView(u))
}

func (a *API) patchUser(w http.ResponseWriter, r *http.Request) {
	var req UserPatch
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := r.PathValue("name")
	u, err := a.cfg.Store.User(r.Context(), name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	role, detail := u.Role, ""
	if req.Role != "" {
		if _, err := ParseRole(req.Role); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		role, detail = req.Role, "role="+req.Role
	}
	var hash string
	if req.Password != "" {
		if hash, err = password.Hash(req.Password); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		detail += " password changed"
	}
	if err := a.cfg.Store.UpdateUser(r.Context(), name, role, hash); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "user.update", "user/"+name, detail)
	u.Role = role
	writeJSON(w, http.StatusOK, userView(u))
}

func (a *API) disableUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.cfg.Store.DisableUser(r.Context(), name, a.cfg.Now().UnixMilli()); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "user.disable", "user/"+name, "")
	w.WriteHeader(http.StatusNoContent)
}
