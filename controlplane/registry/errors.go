package registry

import "errors"

// Errors the API maps to HTTP statuses; branch on them with errors.Is.
var (
	ErrInvalid      = errors.New("invalid request")                 // 400
	ErrUnauthorized = errors.New("unknown bootstrap token")         // 401
	ErrNotFound     = errors.New("not found")                       // 404
	ErrConflict     = errors.New("conflict")                        // 409
	ErrGone         = errors.New("bootstrap token no longer valid") // 410
	ErrUnavailable  = errors.New("temporarily unavailable")         // 503
)
