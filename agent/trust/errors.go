package trust

import "errors"

// Refusals. Every error Verify* returns wraps exactly one of these.
var (
	ErrMalformed          = errors.New("malformed metadata")
	ErrMissingMetadata    = errors.New("missing metadata")
	ErrTooLarge           = errors.New("metadata over its size limit")
	ErrBadSignature       = errors.New("bad signature")
	ErrUnknownKey         = errors.New("signature by a key the root does not name")
	ErrBelowThreshold     = errors.New("signatures below threshold")
	ErrDuplicateSignature = errors.New("duplicate-key signatures")
	ErrExpired            = errors.New("metadata expired")
	ErrMetadataRollback   = errors.New("metadata version lower than trusted")
	ErrMixAndMatch        = errors.New("metadata roles inconsistent (mix-and-match)")
	ErrNotReleased        = errors.New("director names a target the release repository does not")
	ErrDisagree           = errors.New("director and release disagree on the target")
	ErrWrongDevice        = errors.New("director metadata is for another device")
	ErrWrongHardware      = errors.New("target is not for this hardware")
	ErrRollback           = errors.New("release counter lower than installed")
	ErrDirectorRequired   = errors.New("director metadata required (no local authorisation)")
	ErrNotInstalled       = errors.New("target not recorded as installed")
	ErrTargetMismatch     = errors.New("manifest does not match the verified target")
)
