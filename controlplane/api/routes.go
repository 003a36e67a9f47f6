package api

import "net/http"

// route is one API endpoint. Request and Response are zero values of the
// body types, from which the OpenAPI document takes its schemas.
type route struct {
	Method, Path string
	Role         Role
	Summary      string
	Request      any // nil: no body
	Response     any
	Status       int // success status; 0 = 200
	Query        []param
	Handler      http.HandlerFunc
	// RawBody: the request body is raw bytes (application/octet-stream),
	// not JSON. MaxBody caps it; 0 = maxBody.
	RawBody bool
	MaxBody int64
}

type param struct {
	Name, Description string
}

func (a *API) routes() []route {
	return []route{
		{Method: "GET", Path: "/healthz", Role: Public, Summary: "Liveness and version", Response: Health{}, Handler: a.health},
		{Method: "GET", Path: "/v1/openapi.json", Role: Public, Summary: "This document", Response: map[string]any{}, Handler: a.openapi},
		{Method: "POST", Path: "/v1/enrol", Role: Public, Summary: "Enrol a device with a bootstrap token (body: protojson EnrolRequest)",
			Request: EnrolRequestDoc{}, Response: EnrolResponseDoc{}, Handler: a.enrol},
		{Method: "GET", Path: "/v1/whoami", Role: Viewer, Summary: "The calling token's name and role", Response: WhoAmI{}, Handler: a.whoami},
		{Method: "GET", Path: "/v1/devices", Role: Viewer, Summary: "List devices", Response: DeviceList{}, Handler: a.listDevices,
			Query: []param{{"selector", "labels that must match, k=v,k2=v2"}, {"online", "true or false"},
				{"decommissioned", "true to include decommissioned devices"}, {"limit", "page size (default 500, max 5000)"}, {"after", "last ID of the previous page"}}},
		{Method: "GET", Path: "/v1/devices/{id}", Role: Viewer, Summary: "One device with its facts", Response: DeviceView{}, Handler: a.getDevice},
		{Method: "PATCH", Path: "/v1/devices/{id}/labels", Role: Operator, Summary: "Set and remove labels", Request: LabelPatch{}, Response: DeviceView{}, Handler: a.patchLabels},
		{Method: "POST", Path: "/v1/devices/{id}/decommission", Role: Operator, Summary: "Revoke a device's credentials at once; its ID is never reused", Response: DeviceView{}, Handler: a.decommission},
		{Method: "POST", Path: "/v1/devices/{id}/commands", Role: Operator, Summary: "Send ping or resync and wait for the answer", Request: CommandRequest{}, Response: CommandResponse{}, Handler: a.command},
		{Method: "GET", Path: "/v1/enrol-tokens", Role: Admin, Summary: "List bootstrap tokens", Response: []EnrolTokenView{}, Handler: a.listEnrolTokens},
		{Method: "POST", Path: "/v1/enrol-tokens", Role: Admin, Summary: "Create a bootstrap token; the secret is shown once", Request: EnrolTokenRequest{}, Response: EnrolTokenCreated{}, Status: http.StatusCreated, Handler: a.createEnrolToken},
		{Method: "DELETE", Path: "/v1/enrol-tokens/{id}", Role: Admin, Summary: "Revoke a bootstrap token", Status: http.StatusNoContent, Handler: a.revokeEnrolToken},
		{Method: "GET", Path: "/v1/tokens", Role: Admin, Summary: "List API tokens", Response: []APITokenView{}, Handler: a.listAPITokens},
		{Method: "POST", Path: "/v1/tokens", Role: Admin, Summary: "Create an API token; the secret is shown once", Request: APITokenRequest{}, Response: APITokenCreated{}, Status: http.StatusCreated, Handler: a.createAPIToken},
		{Method: "DELETE", Path: "/v1/tokens/{id}", Role: Admin, Summary: "Revoke an API token", Status: http.StatusNoContent, Handler: a.revokeAPIToken},
		{Method: "GET", Path: "/v1/users", Role: Admin, Summary: "List console users", Response: []UserView{}, Handler: a.listUsers},
		{Method: "POST", Path: "/v1/users", Role: Admin, Summary: "Create a console user with a password (stored as an argon2id hash)", Request: UserRequest{}, Response: UserView{}, Status: http.StatusCreated, Handler: a.createUser},
		{Method: "PATCH", Path: "/v1/users/{name}", Role: Admin, Summary: "Change a console user's role or password; the user's sessions end", Request: UserPatch{}, Response: UserView{}, Handler: a.patchUser},
		{Method: "DELETE", Path: "/v1/users/{name}", Role: Admin, Summary: "Disable a console user and end its sessions", Status: http.StatusNoContent, Handler: a.disableUser},
		{Method: "GET", Path: "/v1/audit", Role: Operator, Summary: "The audit log, newest first", Response: []AuditView{}, Handler: a.listAudit,
			Query: []param{{"limit", "entries (default 100)"}, {"before", "entries with ID below this"}}},
		{Method: "PUT", Path: "/v1/releases/metadata", Role: Admin, Summary: "Upload the release repository's offline-signed metadata (root versions, targets); it must chain from the trusted root. The server signs snapshot and timestamp and publishes it",
			Request: ReleasePush{}, Response: ReleaseView{}, MaxBody: maxReleaseBody, Handler: a.pushRelease},
		{Method: "GET", Path: "/v1/bundles", Role: Viewer, Summary: "The released bundles: versions, signatures on the release metadata, size and runtime variants of each uploaded one",
			Response: BundleList{}, Handler: a.listBundles},
		{Method: "PUT", Path: "/v1/bundles/chunks/{sha256}", Role: Operator, Summary: "Upload one bundle chunk (raw bytes), named by its SHA-256",
			RawBody: true, MaxBody: maxChunkBody, Status: http.StatusNoContent, Handler: a.putChunk},
		{Method: "POST", Path: "/v1/bundles", Role: Operator, Summary: "Upload a bundle manifest (raw protobuf bytes); it must be a released target and its chunks uploaded (409 lists the missing ones)",
			RawBody: true, MaxBody: maxManifestBody, Response: BundleView{}, Handler: a.pushBundle},
		{Method: "POST", Path: "/v1/devices/{id}/assign", Role: Operator, Summary: "Assign a released model to a device: the director signs it into the device's desired state and delivery starts",
			Request: AssignRequest{}, Response: AssignmentView{}, Handler: a.assign},
		{Method: "GET", Path: "/v1/devices/{id}/models", Role: Viewer, Summary: "The device's models as it last reported them: active slot and release, health, what is staged",
			Response: []ModelView{}, Handler: a.deviceModels},
		{Method: "GET", Path: "/v1/models", Role: Viewer, Summary: "The fleet's model versions: devices running each release of each model, by health",
			Response: []ModelVersionView{}, Handler: a.fleetModels},
		{Method: "GET", Path: "/v1/devices/{id}/progress", Role: Viewer, Summary: "The device's latest fetch progress, per bundle", Response: []ProgressView{}, Handler: a.progress},
		{Method: "GET", Path: "/v1/drift", Role: Viewer, Summary: "Merged telemetry and drift of model releases over a time range: one device, a cohort (selector, model release) or the fleet",
			Response: DriftReport{}, Handler: a.drift, Query: append([]param{{"model", "model name (default: every model with telemetry in range)"},
				{"release", "one release of the model"}, {"device", "one device"}, {"selector", "a cohort: labels k=v,k2=v2"}}, rangeParams...)},
		{Method: "GET", Path: "/v1/devices/{id}/events", Role: Viewer, Summary: "The device's events (errors, rollbacks, restarts), newest first", Response: []EventView{}, Handler: a.deviceEvents,
			Query: append([]param{{"level", "info, warn, error (comma-separated)"}, {"limit", "events (default 100, max 5000)"}}, rangeParams...)},
		{Method: "POST", Path: "/v1/rollouts", Role: Operator, Summary: "Create a staged rollout from its spec (YAML or JSON, docs/rollouts.md); the scheduler starts it at once",
			RawBody: true, MaxBody: maxRolloutSpec, Response: RolloutView{}, Status: http.StatusCreated, Handler: a.createRollout},
		{Method: "GET", Path: "/v1/rollouts", Role: Viewer, Summary: "List rollouts, newest first", Response: []RolloutView{}, Handler: a.listRollouts,
			Query: []param{{"model", "one model"}, {"phase", "running, paused, rolling_back, rolled_back, completed"}, {"limit", "rollouts (default 100, max 1000)"}}},
		{Method: "GET", Path: "/v1/rollouts/{id}", Role: Viewer, Summary: "One rollout: phase, stage, gate evaluations with their values, devices per state",
			Response: RolloutView{}, Handler: a.getRollout, Query: []param{{"devices", "true to list each device's state"}}},
		{Method: "POST", Path: "/v1/rollouts/{id}/pause", Role: Operator, Summary: "Pause a rollout: no new assignments or stage advances", Request: RolloutAction{}, Response: RolloutView{}, Handler: a.actRollout("pause")},
		{Method: "POST", Path: "/v1/rollouts/{id}/resume", Role: Operator, Summary: "Resume a paused rollout; what paused it is no longer judged", Request: RolloutAction{}, Response: RolloutView{}, Handler: a.actRollout("resume")},
		{Method: "POST", Path: "/v1/rollouts/{id}/promote", Role: Operator, Summary: "Advance to the next stage now, skipping the rest of the bake and the gates", Request: RolloutAction{}, Response: RolloutView{}, Handler: a.actRollout("promote")},
		{Method: "POST", Path: "/v1/rollouts/{id}/abort", Role: Operator, Summary: "Abort: every device the rollout switched is sent back", Request: RolloutAction{}, Response: RolloutView{}, Handler: a.actRollout("abort")},
		{Method: "GET", Path: "/v1/rollouts/{id}/audit", Role: Viewer, Summary: "The rollout's audit trail: operator actions and scheduler decisions, newest first", Response: []AuditView{}, Handler: a.rolloutAudit,
			Query: []param{{"limit", "entries (default 100)"}, {"before", "entries with ID below this"}}},
		{Method: "GET", Path: "/v1/metrics", Role: Viewer, Summary: "The control plane's counters", Response: map[string]any{}, Handler: a.metrics},
	}
}
