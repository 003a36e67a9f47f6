package rollout

import (
	"strconv"
	"strings"
	"time"

	_ "time/tzdata" // time zones for maintenance windows on hosts without a zoneinfo database
)

// Zones resolves the time zones the spec's maintenance windows need for
// these device labels: the default and every zone a device's label names
// (unknown names are left out; such a device is never in a window). The
// reconciler is given the result, so it never reads the zone database
// itself.
func Zones(s *Spec, labels []map[string]string) map[string]*time.Location {
	out := map[string]*time.Location{}
	m := s.Maintenance
	if m == nil {
		return out
	}
	names := []string{m.DefaultTimezone}
	for _, l := range labels {
		if z, ok := l[m.TimezoneLabel]; ok {
			names = append(names, z)
		}
	}
	for _, n := range names {
		if _, ok := out[n]; ok || n == "" || len(n) > 64 {
			continue
		}
		if loc, err := time.LoadLocation(n); err == nil {
			out[n] = loc
		}
	}
	return out
}

// inWindow reports whether a device with these labels may be assigned at
// nowMs: always without maintenance windows; otherwise when its local time
// (from its time-zone label, or the default) is inside one of them.
func (m *Maintenance) inWindow(labels map[string]string, zones map[string]*time.Location, nowMs int64) bool {
	if m == nil {
		return true
	}
	name, ok := labels[m.TimezoneLabel]
	if !ok {
		name = m.DefaultTimezone
	}
	loc, ok := zones[name]
	if !ok {
		return false
	}
	t := time.UnixMilli(nowMs).In(loc)
	minute := t.Hour()*60 + t.Minute()
	for _, w := range m.Windows {
		start, end := clockMinutes(w.Start), clockMinutes(w.End)
		if start < end {
			if minute >= start && minute < end && opensOn(w.Days, t.Weekday()) {
				return true
			}
			continue
		}
		// Crosses midnight: the evening part opens on a listed day, the
		// morning part belongs to the day before.
		if minute >= start && opensOn(w.Days, t.Weekday()) {
			return true
		}
		if minute < end && opensOn(w.Days, (t.Weekday()+6)%7) {
			return true
		}
	}
	return false
}

func opensOn(days []string, d time.Weekday) bool {
	if len(days) == 0 {
		return true
	}
	for _, n := range days {
		if dayNames[strings.ToLower(n)] == d {
			return true
		}
	}
	return false
}

func clockMinutes(s string) int {
	h, m, _ := strings.Cut(s, ":")
	hh, _ := strconv.Atoi(h)
	mm, _ := strconv.Atoi(m)
	return hh*60 + mm
}
