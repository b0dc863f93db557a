#!/usr/bin/env bash
# Makes sure Prometheus and Alertmanager are installed (Debian's `prometheus`
# and `prometheus-alertmanager`). Starts neither: the tests run their own on
# loopback ports with their own configuration. Safe to run again.
set -euo pipefail

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-prometheus: ${missing[*]} not installed; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "ensure-prometheus: installing ${missing[*]} from Debian's packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
# The packages enable services for systemd; nothing here runs them.
prometheus --version 2>&1 | head -1
prometheus-alertmanager --version 2>&1 | head -1
