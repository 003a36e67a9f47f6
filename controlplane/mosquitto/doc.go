// Package mosquitto runs Flotilla on an external Mosquitto broker (2.0 or
// later), for sites that outgrow the embedded one.
//
// Devices log in with their device ID as the username and a per-device
// secret, and reach only their own topics: the table in proto/topic is the
// one source of those rules. Two modes:
//
// Dynamic security (the default for fleets). Mosquitto's dynamic-security
// plugin holds clients and roles in a JSON file and changes them at run time
// through $CONTROL/dynamic-security/v1. InitDynsec writes that file with an
// admin user; Config renders mosquitto.conf loading the plugin; Dynsec,
// connected as the admin, enrols a device (Provision), sets the default
// deny (EnsureBaseline), creates control-plane users (ProvisionControl) and
// decommissions a device (Revoke): deleting its client disconnects it at
// once and it cannot log in again. Mosquitto 2.0 does not expand %u or %c
// in dynamic-security ACLs (2.1 does), so every device gets a role of its
// own with its topics spelt out (DeviceRolePrefix + ID).
//
// Static files (small sites, no run-time changes). Config with PasswordFile
// and ACLFile: one PasswordLine per device and control user, and the ACL
// from topic.Scheme.MosquittoACL, whose "pattern" lines give each user its
// own topics. Adding or revoking a device means rewriting the password file
// and sending mosquitto SIGHUP; an open connection is not cut by a reload.
//
// Facts checked against mosquitto 2.0.11 by this package's tests: a denied
// PUBLISH from an MQTT 3.1.1 client is dropped silently (the connection
// stays up, QoS 1 is still acknowledged); a denied SUBSCRIBE is answered
// with return code 0x80; deleting or modifying (new password) a dynsec
// client disconnects its sessions at once. The plugin rewrites its whole
// JSON file on every change, so a change costs time in proportion to the
// number of devices (see BenchmarkProvision).
//
// The mosquittotest package starts throwaway brokers for tests.
package mosquitto
