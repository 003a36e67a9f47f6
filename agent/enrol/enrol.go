// Package enrol is the device side of enrolment: it proves possession of the
// device's ed25519 key, posts an EnrolRequest to the control plane's
// POST /v1/enrol with a bootstrap token, and returns the credentials the
// control plane issues.
//
// The contract (the control plane implements the other side):
//
//	POST {server}/v1/enrol
//	Content-Type: application/json
//	body: flotilla.v1.EnrolRequest as protojson
//
//	200 application/json: flotilla.v1.EnrolResponse as protojson (≤ 1 MiB)
//	400 {"error": "..."}: the request is invalid           → ErrInvalid
//	401 {"error": "..."}: unknown or bad token             → ErrUnauthorized
//	409 {"error": "..."}: the device ID is taken           → ErrConflict
//	410 {"error": "..."}: token expired, exhausted, revoked → ErrGone
//	429, 5xx: try again later (Temporary reports true)
//
// On first contact the agent may know the control plane only by the SHA-256
// fingerprint of its CA certificate: PinnedTLS accepts a server whose
// presented chain contains a certificate with that fingerprint and whose leaf
// that certificate verifies, so the server must send its CA in its chain. The
// CA PEM in the response must hold the same certificate; the agent trusts it
// alone from then on.
package enrol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Path is the enrolment endpoint under the server URL.
const Path = "/v1/enrol"

// MaxResponse is the largest response body read.
const MaxResponse = 1 << 20

// Errors for the refusals the server can give; an *Error wraps one.
var (
	ErrInvalid      = errors.New("enrolment request invalid")
	ErrUnauthorized = errors.New("enrolment token unknown or invalid")
	ErrConflict     = errors.New("device ID already enrolled")
	ErrGone         = errors.New("enrolment token expired, exhausted or revoked")
)

// Error is a refusal or failure answered by the server.
type Error struct {
	StatusCode int
	Message    string // the server's {"error": ...}, or the status text
}

func (e *Error) Error() string {
	return fmt.Sprintf("enrol: server answered %d: %s", e.StatusCode, e.Message)
}

// Unwrap returns the sentinel for the status code, if any.
func (e *Error) Unwrap() error {
	switch e.StatusCode {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusConflict:
		return ErrConflict
	case http.StatusGone:
		return ErrGone
	}
	return nil
}

// Temporary reports whether trying again later may succeed.
func (e *Error) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// NewRequest builds a signed enrolment request for deviceID with key priv.
func NewRequest(priv ed25519.PrivateKey, deviceID, token string, facts *flotillapb.Facts, labels map[string]string) *flotillapb.EnrolRequest {
	pub := priv.Public().(ed25519.PublicKey)
	return &flotillapb.EnrolRequest{
		Token:           token,
		DeviceId:        deviceID,
		PublicKey:       pub,
		Signature:       ed25519.Sign(priv, flotillapb.EnrolProof(deviceID, pub, token)),
		Facts:           facts,
		Labels:          labels,
		WantCertificate: true,
	}
}

// Enrol posts req to serverURL's enrolment endpoint with client and returns
// the server's answer, checked for the fields the agent needs.
func Enrol(ctx context.Context, client *http.Client, serverURL string, req *flotillapb.EnrolRequest) (*flotillapb.EnrolResponse, error) {
	body, err := protojson.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(serverURL, "/")+Path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("enrol: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &Error{StatusCode: resp.StatusCode, Message: errorMessage(resp.StatusCode, data)}
	}
	if len(data) > MaxResponse {
		return nil, fmt.Errorf("enrol: response over %d bytes", MaxResponse)
	}
	var out flotillapb.EnrolResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("enrol: decode response: %w", err)
	}
	if err := checkResponse(req.GetDeviceId(), &out); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	return &out, nil
}

func checkResponse(deviceID string, r *flotillapb.EnrolResponse) error {
	switch {
	case r.GetDeviceId() != "" && r.GetDeviceId() != deviceID:
		return fmt.Errorf("response is for device %q, not %q", r.GetDeviceId(), deviceID)
	case r.GetMqttUrl() == "":
		return errors.New("response has no mqtt_url")
	case r.GetMqttPassword() == "":
		return errors.New("response has no mqtt_password")
	}
	return nil
}

// errorMessage extracts the server's {"error": "..."} or falls back to the
// status text.
func errorMessage(code int, data []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		if len(e.Error) > 512 {
			e.Error = e.Error[:512]
		}
		return e.Error
	}
	return http.StatusText(code)
}
