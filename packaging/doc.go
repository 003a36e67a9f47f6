// Package packaging holds no code: it is the agent's packaging (the
// systemd unit, the install script, the nfpm configuration of the .deb,
// the default configuration) and the tests that check it — the unit with
// systemd-analyze, the .deb built by `make deb` with dpkg-deb, the install
// script into a staging root. docs/field-guide.md describes it.
package packaging
