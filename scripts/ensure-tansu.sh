#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker answers on KAFKA_BROKERS (default
# 127.0.0.1:9092): installs tansu (an Apache-Kafka-compatible broker in Rust)
# with cargo when it is missing, and starts it in the background with memory
# storage. Safe to run again.
set -euo pipefail
brokers="${KAFKA_BROKERS:-127.0.0.1:9092}"
first="${brokers%%,*}"
host="${first%:*}"
port="${first##*:}"

up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if up; then
    exit 0
fi
case "$host" in
    127.0.0.1|localhost) ;;
    *) echo "ensure-tansu: $first does not answer, and it is not local: start it, or unset KAFKA_BROKERS" >&2; exit 1 ;;
esac
if ! command -v tansu >/dev/null 2>&1; then
    # The postgres feature needs --locked; without dynostore the memory storage is refused.
    echo "ensure-tansu: installing tansu with cargo (about 10 to 20 minutes on 2 cores)"
    cargo install tansu --locked --features dynostore,postgres
fi
log_dir="${TMPDIR:-/tmp}/sentinel-tansu"
mkdir -p "$log_dir"
echo "ensure-tansu: starting tansu broker on $host:$port (memory storage; log: $log_dir/broker.log)"
nohup tansu broker --listener-url "tcp://$host:$port" --advertised-listener-url "tcp://$host:$port" \
    --storage-engine memory://tansu/ >"$log_dir/broker.log" 2>&1 &
for _ in $(seq 1 60); do
    if up; then
        exit 0
    fi
    sleep 0.5
done
echo "ensure-tansu: the broker did not answer on $host:$port within 30 s; see $log_dir/broker.log" >&2
exit 1
