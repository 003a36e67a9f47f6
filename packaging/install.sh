#!/bin/sh
# Installs the Flotilla agent on a systemd Linux device without the .deb
# (docs/field-guide.md): the binary, the unit, the configuration (kept if
# present), the plugin folder and the flotilla group; then enables the
# unit and starts it once the configuration names a server.
#
#   install.sh -b flotilla-agent-linux-arm64 [-p plugin]... [--no-start]
#
# DESTDIR installs into a staging root (packaging tests, image builds):
# nothing is enabled or started and no group is created there.
set -eu

usage() {
	echo "usage: $0 -b AGENT_BINARY [-p PLUGIN_BINARY]... [--no-start]" >&2
	exit 2
}

bin=""
plugins=""
start=1
while [ $# -gt 0 ]; do
	case "$1" in
	-b) [ $# -ge 2 ] || usage; bin=$2; shift 2 ;;
	-p) [ $# -ge 2 ] || usage; plugins="$plugins $2"; shift 2 ;;
	--no-start) start=0; shift ;;
	-h|--help) usage ;;
	*) usage ;;
	esac
done
[ -n "$bin" ] || usage
[ -f "$bin" ] || { echo "install.sh: $bin: no such file" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
	echo "install.sh: run as root (or set DESTDIR)" >&2
	exit 1
fi
# Refuse a binary for another machine before replacing a working one.
if [ -z "$root" ] && ! "$bin" version >/dev/null 2>&1; then
	echo "install.sh: $bin does not run here (another architecture?)" >&2
	exit 1
fi

install -d -m 0755 "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/flotilla/plugins" "$root/usr/share/doc/flotilla-agent"
install -d -m 0755 "$root/etc/flotilla"
install -d -m 0700 "$root/var/lib/flotilla-agent"
# A new binary beside the old one, then one rename: never half a binary.
install -m 0755 "$bin" "$root/usr/bin/.flotilla-agent.new"
mv -f "$root/usr/bin/.flotilla-agent.new" "$root/usr/bin/flotilla-agent"
for p in $plugins; do
	install -m 0755 "$p" "$root/usr/lib/flotilla/plugins/$(basename "$p")"
done
install -m 0644 "$here/systemd/flotilla-agent.service" "$root/lib/systemd/system/flotilla-agent.service"
if [ -f "$here/../docs/field-guide.md" ]; then
	install -m 0644 "$here/../docs/field-guide.md" "$root/usr/share/doc/flotilla-agent/field-guide.md"
fi
if [ ! -e "$root/etc/flotilla/agent.toml" ]; then
	install -m 0600 "$here/agent.toml" "$root/etc/flotilla/agent.toml"
fi

[ -n "$root" ] && exit 0
getent group flotilla >/dev/null || groupadd --system flotilla
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable flotilla-agent.service
	if [ "$start" = 1 ] && grep -Eq '^[[:space:]]*server[[:space:]]*=' /etc/flotilla/agent.toml; then
		systemctl restart flotilla-agent.service
		echo "flotilla-agent started; check it with: flotilla-agent diag status"
	else
		echo "flotilla-agent installed; set server, device_id and enrol_token in /etc/flotilla/agent.toml, then: systemctl start flotilla-agent"
	fi
fi
