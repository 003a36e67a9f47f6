package agenttest

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httptest"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/agent/enrol"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func (s *Server) startHTTP() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+enrol.Path, s.handleEnrol)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{s.cert}}
	hs.StartTLS()
	s.http = hs
}

func (s *Server) handleEnrol(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		httpError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	s.mu.Lock()
	if len(s.failures) > 0 {
		f := s.failures[0]
		s.failures = s.failures[1:]
		s.mu.Unlock()
		httpError(w, f.code, f.msg)
		return
	}
	s.mu.Unlock()

	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		httpError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	var req flotillapb.EnrolRequest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "decode request: "+err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.GetToken() != s.token {
		httpError(w, http.StatusUnauthorized, "unknown enrol token")
		return
	}
	resp := &flotillapb.EnrolResponse{
		DeviceId:        req.GetDeviceId(),
		MqttUrl:         s.MQTTURL(),
		MqttUsername:    req.GetDeviceId(),
		MqttPassword:    randomSecret(),
		CaPem:           s.ca.pem,
		TopicPrefix:     s.scheme.Prefix(),
		ProtocolVersion: wire.ProtocolVersion,
	}
	if req.GetWantCertificate() {
		if resp.CertificatePem, err = s.ca.clientCert(req.GetDeviceId(), req.GetPublicKey()); err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	s.mu.Lock()
	if _, taken := s.devices[req.GetDeviceId()]; taken {
		s.mu.Unlock()
		httpError(w, http.StatusConflict, "device ID "+req.GetDeviceId()+" is already enrolled")
		return
	}
	s.devices[req.GetDeviceId()] = &device{password: resp.MqttPassword, pub: req.GetPublicKey()}
	s.enrols++
	s.mu.Unlock()

	out, err := protojson.Marshal(resp)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
