package pki

import (
	"crypto/x509"
	"net"
	"os"
	"slices"
	"strings"
)

// sanSet is the subject alternative names a server certificate must carry.
type sanSet struct {
	dns []string
	ips []net.IP
}

// serverSANs splits hosts into DNS names and IP addresses and adds the
// local names every server answers to. A host may carry a port
// ("mqtt.example.com:8883") or brackets ("[::1]"); both are dropped.
func serverSANs(hosts []string) sanSet {
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if h, err := os.Hostname(); err == nil {
		all = append(all, h)
	}
	var s sanSet
	for _, h := range all {
		h = strings.TrimSpace(h)
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(s.ips, ip.Equal) {
				s.ips = append(s.ips, ip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !slices.Contains(s.dns, h) {
			s.dns = append(s.dns, h)
		}
	}
	return s
}

// coveredBy reports whether cert names every host in s.
func (s sanSet) coveredBy(cert *x509.Certificate) bool {
	for _, d := range s.dns {
		if !slices.ContainsFunc(cert.DNSNames, func(n string) bool { return strings.EqualFold(n, d) }) {
			return false
		}
	}
	for _, ip := range s.ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}
