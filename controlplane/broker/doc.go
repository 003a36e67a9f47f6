// Package broker runs the control plane's embedded MQTT broker and declares
// what the broker needs from the rest of the control plane: an
// [Authenticator] for every CONNECT and an [Authorizer] for every publish,
// subscribe and will.
//
// The embedded broker is mochi-mqtt v2, kept behind [Embedded] so it can be
// replaced (mochi has had no release since 2025-03); at scale an external
// broker (Mosquitto, EMQX) takes its place and enforces the same rules with
// its own ACLs. What [Embedded] enforces on top of mochi:
//
//   - every client authenticates; there is no anonymous access;
//   - a [Device] connects with its device ID as client ID, so it cannot take
//     over another device's session, and no principal inherits or takes over
//     a session that another principal holds;
//   - a will is refused at CONNECT unless its topic passes
//     [Authorizer.CanPublish] (mochi publishes wills without an ACL check);
//   - devices never subscribe to $-topics ($SYS); nobody publishes to them;
//     shared subscriptions ($share/group/filter) are authorized on the
//     filter inside them;
//   - the TLS handshake, the CONNECT packet and authentication must finish
//     within Config.ConnectTimeout, and at most Config.MaxPending
//     connections may be at that stage at once;
//   - [Embedded.Disconnect] drops every live connection of a principal.
package broker
