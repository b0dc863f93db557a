#!/usr/bin/env bash
# Makes sure a ClickHouse server answers on CLICKHOUSE_URL (default
# http://127.0.0.1:8123): installs Debian's clickhouse-server when it is
# missing and starts it in the background. Safe to run again.
set -euo pipefail
url="${CLICKHOUSE_URL:-http://127.0.0.1:8123}"

ping() { curl -fsS --max-time 2 "$url/ping" >/dev/null 2>&1; }

if ping; then
    exit 0
fi
case "$url" in
    http://127.0.0.1:*|http://localhost:*) ;;
    *) echo "ensure-clickhouse: $url does not answer, and it is not local: start it, or unset CLICKHOUSE_URL" >&2; exit 1 ;;
esac
if ! command -v clickhouse-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ensure-clickhouse: clickhouse-server is not installed; run: sudo apt-get install clickhouse-server" >&2
        exit 1
    fi
    echo "ensure-clickhouse: installing clickhouse-server from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server >/dev/null
fi
config=/etc/clickhouse-server/config.xml
user=root
if id clickhouse >/dev/null 2>&1; then user=clickhouse; fi
echo "ensure-clickhouse: starting clickhouse-server ($config) as $user"
start-stop-daemon --start --oknodo --background --chuid "$user" --chdir /var/lib/clickhouse \
    --exec "$(command -v clickhouse-server)" -- --config-file="$config"
for _ in $(seq 1 60); do
    if ping; then
        exit 0
    fi
    sleep 0.5
done
echo "ensure-clickhouse: clickhouse-server did not answer on $url within 30 s; see /var/log/clickhouse-server/" >&2
exit 1
