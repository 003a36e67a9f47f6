// Package pki holds the control plane's own certificate authority and the
// certificates the server presents on MQTT and HTTPS.
//
// Key hierarchy:
//
//	Flotilla CA (ECDSA P-256, 10 years, path length 0)   ca.pem, ca-key.pem
//	├── server certificate (ECDSA P-256, ~1 year)         server.pem, server-key.pem
//	│     SANs: the configured hosts, localhost, 127.0.0.1, ::1, the host name;
//	│     re-issued at start when within 30 days of expiry or a host is missing
//	└── device client certificates (the device's own ed25519 key; CN = device ID,
//	      ExtKeyUsage ClientAuth). The device sends only its public key.
//
// With no configuration, [LoadOrCreate] makes the CA in the server's data
// folder on first start and reuses it afterwards; devices receive [Authority.CAPEM]
// at enrolment and may pin [Authority.Fingerprint]. Operators who bring their
// own certificates use [FromFiles] and, to keep issuing device certificates,
// [Authority.WithCAKey]. Every file is written atomically (temporary file,
// fsync, rename, fsync of the folder); keys are 0600 and the folder 0700.
// Unreadable or corrupt files are reported, never overwritten.
package pki
