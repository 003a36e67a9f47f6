package storetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testSetLabels(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 1, func(int) map[string]string { return map[string]string{"site": "lyon", "old": "x"} })

	d, err := s.SetLabels(ctx, "dev-000", map[string]string{"site": "paris", "k8s.io/zone": "b"}, []string{"old", "absent"}, now+10)
	must(t, err)
	want := map[string]string{"site": "paris", "k8s.io/zone": "b"}
	if !reflect.DeepEqual(d.Labels, want) || d.LabelsChangedAt != now+10 {
		t.Fatalf("labels = %v at %d, want %v at %d", d.Labels, d.LabelsChangedAt, want, now+10)
	}
	if got := mustDevice(t, s, "dev-000"); !reflect.DeepEqual(got, d) {
		t.Fatalf("stored device\n got %+v\nwant %+v", got, d)
	}

	// Selectors follow the change.
	for sel, n := range map[string]int{"site=paris": 1, "site=lyon": 0, "old=x": 0, "k8s.io/zone=b": 1} {
		k, v, _ := strings.Cut(sel, "=")
		got, err := s.ListDevices(ctx, store.ListOptions{Selector: map[string]string{k: v}})
		must(t, err)
		if len(got) != n {
			t.Errorf("selector %s: %d devices, want %d", sel, len(got), n)
		}
	}

	_, err = s.SetLabels(ctx, "nope", map[string]string{"a": "b"}, nil, now)
	wantErr(t, err, store.ErrNotFound)
}

func testSetLabelsInvalid(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 1, func(int) map[string]string { return map[string]string{"site": "lyon"} })
	before := mustDevice(t, s, "dev-000")

	tooMany := map[string]string{}
	for i := range store.MaxLabels {
		tooMany[fmt.Sprintf("k%d", i)] = "v" // with site: one too many
	}
	tests := []struct {
		name   string
		set    map[string]string
		remove []string
	}{
		{"empty key", map[string]string{"": "v"}, nil},
		{"space in key", map[string]string{"a b": "v"}, nil},
		{"colon in key", map[string]string{"a:b": "v"}, nil},
		{"key too long", map[string]string{strings.Repeat("k", 64): "v"}, nil},
		{"value too long", map[string]string{"k": strings.Repeat("é", 256)}, nil},
		{"value not utf-8", map[string]string{"k": "\xff"}, nil},
		{"too many labels", tooMany, nil},
		{"set and removed", map[string]string{"site": "paris"}, []string{"site"}},
		{"valid with an invalid", map[string]string{"good": "v", "bad key": "v"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.SetLabels(ctx, "dev-000", tt.set, tt.remove, now+10)
			wantErr(t, err, store.ErrInvalid)
			if got := mustDevice(t, s, "dev-000"); !reflect.DeepEqual(got, before) {
				t.Fatalf("device changed:\n got %+v\nwant %+v", got, before)
			}
		})
	}

	// The limits themselves are allowed.
	atLimit := map[string]string{strings.Repeat("k", 63): strings.Repeat("é", 255)}
	for i := range store.MaxLabels - 2 {
		atLimit[fmt.Sprintf("k%d", i)] = ""
	}
	d, err := s.SetLabels(ctx, "dev-000", atLimit, nil, now+20)
	must(t, err)
	if len(d.Labels) != store.MaxLabels {
		t.Fatalf("%d labels, want %d", len(d.Labels), store.MaxLabels)
	}
}

func testListDevicesSelector(t *testing.T, s *store.Store) {
	ctx := context.Background()
	// dev-000…dev-011: site alternates a/b, tier cycles x/y/z.
	Enrol(t, s, 12, func(i int) map[string]string {
		return map[string]string{"site": "ab"[i%2 : i%2+1], "tier": "xyz"[i%3 : i%3+1]}
	})
	_, err := s.Decommission(ctx, "dev-000", now+1)
	must(t, err)
	for _, id := range []string{"dev-002", "dev-004"} {
		_, err := s.SetStatus(ctx, id, true, now+1)
		must(t, err)
	}
	on, off := true, false
	tests := []struct {
		name string
		opts store.ListOptions
		want []string
	}{
		{"all active", store.ListOptions{}, seq(1, 12)},
		{"with decommissioned", store.ListOptions{IncludeDecommissioned: true}, seq(0, 12)},
		{"site=a", store.ListOptions{Selector: map[string]string{"site": "a"}}, []string{"dev-002", "dev-004", "dev-006", "dev-008", "dev-010"}},
		{"site=a,tier=x", store.ListOptions{Selector: map[string]string{"site": "a", "tier": "x"}}, []string{"dev-006"}},
		{"site=a,tier=x with decommissioned", store.ListOptions{Selector: map[string]string{"site": "a", "tier": "x"}, IncludeDecommissioned: true}, []string{"dev-000", "dev-006"}},
		{"no match", store.ListOptions{Selector: map[string]string{"site": "c"}}, nil},
		{"unknown key", store.ListOptions{Selector: map[string]string{"zone": "a"}}, nil},
		{"online", store.ListOptions{Online: &on}, []string{"dev-002", "dev-004"}},
		{"offline site=a", store.ListOptions{Online: &off, Selector: map[string]string{"site": "a"}}, []string{"dev-006", "dev-008", "dev-010"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListDevices(ctx, tt.opts)
			must(t, err)
			if !slices.Equal(ids(got), tt.want) {
				t.Fatalf("got %v, want %v", ids(got), tt.want)
			}
		})
	}
}

func testListDevicesPagination(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 10, func(i int) map[string]string { return map[string]string{"even": fmt.Sprint(i%2 == 0)} })
	for _, tt := range []struct {
		limit int
		sel   map[string]string
		want  []string
	}{
		{3, nil, seq(0, 10)},
		{1, nil, seq(0, 10)},
		{10, nil, seq(0, 10)},
		{2, map[string]string{"even": "true"}, []string{"dev-000", "dev-002", "dev-004", "dev-006", "dev-008"}},
	} {
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
			page, err := s.ListDevices(ctx, store.ListOptions{Limit: tt.limit, After: after, Selector: tt.sel})
			must(t, err)
			if len(page) > tt.limit {
				t.Fatalf("page of %d, limit %d", len(page), tt.limit)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, ids(page)...)
			after = page[len(page)-1].ID
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("limit %d: paged through %v, want %v", tt.limit, got, tt.want)
		}
	}
}

// seq returns dev-from … dev-(to-1).
func seq(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("dev-%03d", i))
	}
	return out
}
