#!/bin/sh
# Installs muster-agent on this machine as a systemd service, reporting to the muster server
# that served this script.
#
#   curl -fsSL __MUSTER_URL__/install.sh | sudo sh -s -- --token mse_…
#
# Options: --token TOKEN (an enrollment token, required), --interface NAME (default eth0),
# --interval 30s.
set -eu

API="__MUSTER_URL__"
TOKEN=""
IFACE="eth0"
INTERVAL="30s"
while [ $# -gt 0 ]; do
  case "$1" in
    --token) TOKEN="$2"; shift 2 ;;
    --interface) IFACE="$2"; shift 2 ;;
    --interval) INTERVAL="$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
[ -n "$TOKEN" ] || { echo "usage: install.sh --token mse_… [--interface eth0] [--interval 30s]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (sudo sh -s -- …)" >&2; exit 1; }
case "$(uname -m)" in
  __MUSTER_ARCH__) ;;
  *) echo "this server hands out a __MUSTER_ARCH__ agent; this machine is $(uname -m)" >&2; exit 1 ;;
esac

BIN=/usr/local/bin/muster-agent
echo "downloading muster-agent from $API"
curl -fsSL "$API/downloads/muster-agent" -o "$BIN.tmp"
chmod 0755 "$BIN.tmp"
mv "$BIN.tmp" "$BIN"

mkdir -p /etc/muster-agent /var/lib/muster-agent
chmod 0700 /etc/muster-agent /var/lib/muster-agent
umask 077
printf 'MUSTER_AGENT_TOKEN=%s\n' "$TOKEN" > /etc/muster-agent/env

cat > /etc/systemd/system/muster-agent.service <<UNIT
[Unit]
Description=muster agent: heartbeats and reports to $API
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=/etc/muster-agent/env
ExecStart=$BIN --api $API --interface $IFACE --interval $INTERVAL --state-dir /var/lib/muster-agent
Restart=on-failure
RestartSec=5s
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=/var/lib/muster-agent
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now muster-agent
echo "muster-agent installed and started; it reports to $API"
