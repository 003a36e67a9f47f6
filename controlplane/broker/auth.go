package broker

import (
	"context"
	"crypto/x509"
	"fmt"
)

// Kind is the kind of principal behind an MQTT connection.
type Kind uint8

const (
	// Device is an agent, authenticated as one device.
	Device Kind = iota + 1
	// Service is the control plane (or another trusted service).
	Service
)

func (k Kind) String() string {
	switch k {
	case Device:
		return "device"
	case Service:
		return "service"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Principal is who an MQTT connection authenticated as.
type Principal struct {
	Kind Kind
	ID   string
}

// Authenticator decides who may connect.
type Authenticator interface {
	// Authenticate checks a CONNECT. cert is the verified client certificate, or nil.
	Authenticate(ctx context.Context, clientID, username string, password []byte, cert *x509.Certificate) (Principal, error)
}

// Authorizer decides what an authenticated principal may do. It is called
// on every publish, so it must be fast and must not block. Shared
// subscriptions reach CanSubscribe without their $share/group/ prefix.
type Authorizer interface {
	CanPublish(p Principal, topic string) bool
	CanSubscribe(p Principal, filter string) bool
}
