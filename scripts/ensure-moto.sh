#!/usr/bin/env bash
# Makes sure a moto server (AWS EC2 and ECS APIs, in memory) answers on
# 127.0.0.1:5055 for the executor tests, idempotently: answering -> nothing to
# do; missing -> install moto[server] into the project's own venv
# (.venv-tools/, git-ignored) and start it in the background.
#
# The tests use SENTINEL_TEST_AWS_ENDPOINT (default http://127.0.0.1:5055).
set -euo pipefail
cd "$(dirname "$0")/.."

endpoint="${SENTINEL_TEST_AWS_ENDPOINT:-http://127.0.0.1:5055}"
answers() { curl -fsS -o /dev/null "$endpoint/moto-api/" 2>/dev/null; }

if answers; then
    echo "moto: answering at $endpoint"
    exit 0
fi
if [ -n "${SENTINEL_TEST_AWS_ENDPOINT:-}" ]; then
    echo "moto: SENTINEL_TEST_AWS_ENDPOINT is set but nothing answers at $endpoint; start that server" >&2
    exit 1
fi

venv=.venv-tools
if [ ! -x "$venv/bin/moto_server" ]; then
    echo "moto: installing moto[server] into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==5.1.*"
fi

mkdir -p "$venv/log"
nohup "$venv/bin/moto_server" -H 127.0.0.1 -p 5055 >"$venv/log/moto.log" 2>&1 &
for _ in $(seq 1 100); do
    if answers; then
        echo "moto: started at $endpoint (log: $venv/log/moto.log)"
        exit 0
    fi
    sleep 0.2
done
echo "moto: started but not answering after 20 s; see $venv/log/moto.log" >&2
exit 1
