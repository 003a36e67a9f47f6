package enrol

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func TestNewRequestValidates(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	req := NewRequest(priv, "dev-1", "tok", &flotillapb.Facts{Os: "linux"}, map[string]string{"a": "b"})
	if err := req.Validate(); err != nil || !req.GetWantCertificate() {
		t.Errorf("Validate = %v, want_certificate %v", err, req.GetWantCertificate())
	}
}

func TestErrorsAndLimits(t *testing.T) {
	var status int
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != Path || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad path or type", http.StatusNotFound)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	req := NewRequest(priv, "dev-1", "tok", nil, nil)
	tests := []struct {
		status    int
		body      string
		want      error
		temporary bool
	}{
		{401, `{"error":"unknown token"}`, ErrUnauthorized, false},
		{409, `{"error":"taken"}`, ErrConflict, false},
		{410, `not json`, ErrGone, false},
		{400, `{"error":"bad"}`, ErrInvalid, false},
		{503, ``, nil, true},
		{429, ``, nil, true},
	}
	for _, tt := range tests {
		status, body = tt.status, tt.body
		_, err := Enrol(context.Background(), srv.Client(), srv.URL+"/", req)
		var se *Error
		if !errors.As(err, &se) || se.StatusCode != tt.status || se.Temporary() != tt.temporary ||
			(tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%d: err = %v", tt.status, err)
		}
	}

	status, body = 200, `{"deviceId":"dev-2","mqttUrl":"mqtts://x","mqttPassword":"p"}`
	if _, err := Enrol(context.Background(), srv.Client(), srv.URL, req); err == nil {
		t.Error("accepted a response for another device")
	}
	status, body = 200, `{"mqttUrl":"mqtts://x","mqttPassword":"p","newField":1}`
	if resp, err := Enrol(context.Background(), srv.Client(), srv.URL, req); err != nil || resp.GetMqttPassword() != "p" {
		t.Errorf("Enrol = %v, %v (unknown fields must be ignored)", resp, err)
	}
	status, body = 200, `{"mqttUrl":"`+strings.Repeat("x", MaxResponse)+`"}`
	if _, err := Enrol(context.Background(), srv.Client(), srv.URL, req); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("oversize response: %v", err)
	}
}
