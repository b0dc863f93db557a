#!/usr/bin/env bash
# Holds the live API to its own OpenAPI document: starts `sentinel serve` on
# the embedded defaults (a fresh SQLite file, the embedded telemetry
# pipeline), makes one key of each role, and runs schemathesis (PyPI, in the
# project's .venv-tools/) with every phase and every check, once per key.
# Exit 0 only when every run reports no failure.
#
# Left out: POST /api/v1/write, whose body is snappy-compressed protobuf that
# schemathesis cannot generate from a schema; the real Prometheus remote-writes
# to it in sentinel/tests/it/prometheus.rs, and its decoder has its own tests.
#
# SENTINEL_BIN: the binary to serve (default: the debug build in the cargo
# target dir). SCHEMATHESIS_EXAMPLES: examples per operation (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SENTINEL_BIN:-${CARGO_TARGET_DIR:-target}/debug/sentinel}"
if [ ! -x "$bin" ]; then
    echo "schemathesis: no sentinel binary at $bin (cargo build --bin sentinel, or set SENTINEL_BIN)" >&2
    exit 1
fi
venv=.venv-tools
version=4.32.5
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
    echo "schemathesis: installing schemathesis $version into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export SENTINEL_DATA_DIR="$work/data" SENTINEL_LOG="warn"
unset DATABASE_URL KAFKA_BROKERS CLICKHOUSE_URL
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The per-key rate limit raised, so that what is behind it gets tested too
# (429 is documented on every route either way).
printf 'server: { rate_per_sec: 10000, burst: 10000 }\n' >"$work/sentinel.yaml"
export SENTINEL_CONFIG="$work/sentinel.yaml"
"$bin" migrate >/dev/null
declare -A keys
for role in viewer operator admin ingest; do
    keys[$role]="$("$bin" keys create --direct --name "schemathesis-$role" --role "$role" --json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')"
done
"$bin" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "schemathesis: serve exited:" >&2; cat "$work/serve.log" >&2; exit 1; }
    sleep 0.2
done

status=0
for role in viewer operator admin ingest; do
    echo "schemathesis: as the $role key"
    if ! "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
        --header "Authorization: Bearer ${keys[$role]}" \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-60}" \
        --seed "${SCHEMATHESIS_SEED:-7}" \
        --no-color \
        --suppress-health-check all \
        --request-timeout 20 \
        --exclude-path /api/v1/write; then
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "schemathesis: failures above; the server's log:" >&2
    tail -50 "$work/serve.log" >&2
fi
exit "$status"
