package server_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/promscrape"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TestPrometheusMetrics scrapes /metrics over HTTPS and parses it with the
// client library's parser: the fleet's figures follow what happened (two
// enrolled, one online, one MQTT client), API requests are observed under
// their route pattern rather than their path, and a request no route
// matched is "unmatched".
func TestPrometheusMetrics(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	ctx := context.Background()
	admin := adminClient(t, s, dir)
	tlsCfg, err := pki.PinnedClientTLS(s.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	scrape := func() promscrape.Families {
		t.Helper()
		f, err := promscrape.Get(ctx, hc, s.APIURL()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	f := scrape()
	if v, ok := f.Value("flotilla_devices"); !ok || v != 0 {
		t.Fatalf("devices before any enrolment: %v, %v", v, ok)
	}
	if v, _ := f.Value("flotilla_metrics_source_up"); v != 1 {
		t.Fatalf("source up = %v", v)
	}
	if _, ok := f.Value("process_resident_memory_bytes"); !ok {
		t.Fatal("no process collector")
	}

	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "m", MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, s, tok.Token, "m-1")
	enrol(t, s, tok.Token, "m-2")
	d, err := connect(t, s, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}
	online, _ := wire.Encode(&pb.Status{DeviceId: "m-1", State: pb.Status_STATE_ONLINE})
	publishProto(t, d, topic.Status, online)
	eventually(t, "m-1 online", func() bool {
		v, err := admin.Device(ctx, "m-1")
		return err == nil && v.Online
	})
	for _, id := range []string{"m-1", "m-2"} {
		if _, err := admin.Device(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.ListDevices(ctx, apiclient.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if resp, err := hc.Get(s.APIURL() + "/no/such/route"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	f = scrape()
	for name, want := range map[string]float64{"flotilla_devices": 2, "flotilla_devices_online": 1, "flotilla_mqtt_clients": 2} {
		// Two MQTT clients: the device and the control plane's own.
		if v, _ := f.Value(name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v, _ := f.Value("flotilla_server_events_total", "event", "enrolled"); v != 2 {
		t.Errorf("enrolled events = %v, want 2", v)
	}
	if v, _ := f.Value("flotilla_api_request_duration_seconds", "route", "/v1/devices/{id}", "method", "GET", "code", "200"); v < 3 {
		// Two by hand and at least one while waiting for m-1 online.
		t.Errorf("GET /v1/devices/{id} observed %v times, want ≥ 3", v)
	}
	for _, r := range f.Labels("flotilla_api_request_duration_seconds", "route") {
		if r == "/v1/devices/m-1" {
			t.Error("a request path used as the route label")
		}
	}
	if v, _ := f.Value("flotilla_api_request_duration_seconds", "route", "unmatched", "code", "404"); v != 1 {
		t.Errorf("unmatched 404s = %v, want 1", v)
	}
	if _, ok := f.Quantile("flotilla_api_request_duration_seconds", 0.99); !ok {
		t.Error("no p99 from the latency histogram")
	}
	if v, ok := f.Value("flotilla_telemetry_ingest_capacity"); !ok || v <= 0 {
		t.Errorf("ingest capacity %v, %v", v, ok)
	}
}
