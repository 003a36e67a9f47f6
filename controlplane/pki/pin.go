package pki

import (
	"crypto/tls"

	"github.com/flotilla-edge/flotilla/proto/pin"
)

// PinnedClientTLS returns a TLS configuration for a client that knows only
// the CA's fingerprint (as [Authority.Fingerprint] prints it; case, colons
// and a "sha256:" prefix do not matter). The server must send that CA
// certificate in its chain, which servers built by this package do; the
// chain is then verified against it as the only root, host name included.
func PinnedClientTLS(fingerprint string) (*tls.Config, error) {
	p, err := pin.Parse(fingerprint)
	if err != nil {
		return nil, err
	}
	return pin.TLSConfig(p), nil
}
