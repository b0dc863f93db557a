#!/usr/bin/env python3
"""Two `sentinel serve` processes on one PostgreSQL (run through chaos/run.sh replicas).

1. 200 concurrent Alertmanager notifications of one alert group, each a
   distinct firing (its own startsAt), split across both processes: exactly
   one incident, every other notification attached to it.
2. 50 concurrent auto-approval candidates (50 services whose action the
   policy may approve alone) split across both, against a limit of 10 a
   minute: exactly 10 auto-approved and acted on; the other 40 wait for a
   human, saying why.

Both processes share ClickHouse (the metric store) and act through the
recording backend (chaos/recorder.py). Prints the figures; exits non-zero
if either is not exact.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import chaos
from chaos import ADMIN, BIN, CLICKHOUSE, OUT, RECORDER_PORT, RUN, Replica, http, psql, wait_healthy

DB = f"sentinel_replicas_{RUN}"
DB_URL = ADMIN.rsplit("/", 1)[0] + "/" + DB
CANDIDATES = "state::jsonb->'detection'->>'service' <> 'svc-one'"


def notification(service, i):
    starts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 600)) + f".{i:03d}Z"
    labels = {"alertname": "HighErrorRate", "service": service, "namespace": "chaos",
              "anomaly_type": "error_rate_spike", "metric": "error_rate", "severity": "warning"}
    return {
        "version": "4", "groupKey": f"{{}}:{{alertname=\"HighErrorRate\", service=\"{service}\"}}",
        "status": "firing", "receiver": "sentinel", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighErrorRate", "service": service}, "commonLabels": labels,
        "commonAnnotations": {"summary": f"error rate high on {service}", "value": "12"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": starts,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{i:016x}"}],
    }


def post_all(replicas, key, bodies):
    auth = {"Authorization": f"Bearer {key}"}

    def one(i_body):
        i, body = i_body
        status, reply = http("POST", replicas[i % 2].url() + "/v1/alertmanager", body, auth, timeout=30)
        return status, reply

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(one, enumerate(bodies)))
    refused = [(s, r[:200]) for s, r in answers if s != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} notifications refused, e.g. {refused[:3]}")


def wait_for(what, cond, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not within {within}s")


def main():
    os.makedirs(OUT, exist_ok=True)
    psql(ADMIN, f"CREATE DATABASE {DB}")
    recorder = subprocess.Popen([sys.executable, f"{chaos.ROOT}/chaos/recorder.py", str(RECORDER_PORT), OUT])
    with open(f"{OUT}/sentinel.yaml", "w") as f:
        f.write(f"""services:
  - name: svc-one            # part 1: runs where the policy may not act alone
    runs_on: {{ kubernetes: {{ namespace: manual }} }}
unlisted_services:
  kubernetes: {{ namespace: chaos }}
policy:
  auto_approve: ["kubernetes:chaos/*"]
  max_auto_per_minute: 10
  max_auto_per_hour: 1000
  target_cooldown: 0s
executors:
  dry_run: false
  allowlist: ["kubernetes:chaos/*"]
  webhook: {{ url: "http://127.0.0.1:{RECORDER_PORT}/hooks", kinds: [kubernetes] }}
""")
    env = dict(os.environ, DATABASE_URL=DB_URL, CLICKHOUSE_URL=CLICKHOUSE,
               SENTINEL_CLICKHOUSE_DATABASE=f"replicas_{RUN}", SENTINEL_CONFIG=f"{OUT}/sentinel.yaml",
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    env.pop("KAFKA_BROKERS", None)
    subprocess.run([BIN, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    key = json.loads(subprocess.run([BIN, "keys", "create", "--direct", "--name", "replicas", "--role", "operator",
                                     "--json"], env=env, check=True, capture_output=True, text=True).stdout)["secret"]
    replicas = [Replica(i, env) for i in range(2)]
    ok = False
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_healthy(r)

        # 1. One fingerprint, 200 concurrent firings across both processes.
        t = time.time()
        # (The catalogue puts svc-one where the policy may not act alone: it takes none of part 2's auto-approvals.)
        post_all(replicas, key, [notification("svc-one", i) for i in range(200)])
        took = time.time() - t
        runs = psql(DB_URL, "SELECT id FROM runs WHERE graph = 'incident'")
        attached = psql(DB_URL, "SELECT COUNT(*) FROM run_signals WHERE kind = 'attach'")[0][0]
        print(f"replicas: 200 concurrent firings of one alert group over 2 processes ({took:.2f}s): "
              f"{len(runs)} incident(s), {attached} attached")
        one = len(runs) == 1 and int(attached) == 199

        # 2. 50 auto-approval candidates against 10 a minute.
        post_all(replicas, key, [notification(f"svc-{i:02d}", 0) for i in range(50)])

        def settled():
            rows = psql(DB_URL, "SELECT COUNT(*) FILTER (WHERE status = 'waiting' AND node = 'await_approval'), "
                                "COUNT(*) FILTER (WHERE state::jsonb->'decisions' @> '[{\"by\": \"policy\"}]'), "
                                "COUNT(*) FROM runs WHERE graph = 'incident' AND " + CANDIDATES)
            waiting, by_policy, total = map(int, rows[0])
            return total == 50 and waiting + by_policy == 50
        wait_for("50 candidates decided", settled)
        rows = psql(DB_URL, "SELECT COUNT(*) FILTER (WHERE status = 'waiting' AND node = 'await_approval'), "
                            "COUNT(*) FILTER (WHERE state::jsonb->'decisions' @> '[{\"by\": \"policy\"}]') "
                            "FROM runs WHERE graph = 'incident' AND " + CANDIDATES)
        waiting, by_policy = map(int, rows[0])
        reserved = int(psql(DB_URL, "SELECT COUNT(*) FROM ledger WHERE kind = 'auto_approval'")[0][0])
        # The auto-approved act through the recorder: wait for their executes to land.
        def executes():
            path = f"{OUT}/actions.jsonl"
            return [json.loads(line) for line in open(path)] if os.path.exists(path) else []
        wait_for("10 actions at the backend", lambda: len([a for a in executes() if a["verb"] == "execute"]) >= by_policy)
        acted = len([a for a in executes() if a["verb"] == "execute"])
        print(f"replicas: 50 concurrent auto-approval candidates over 2 processes, limit 10/min: "
              f"{by_policy} auto-approved ({reserved} in the ledger), {acted} acted on, {waiting} wait for a human")
        ok = one and by_policy == 10 and reserved == 10 and acted == 10 and waiting == 40
    finally:
        for r in replicas:
            r.kill()
        recorder.kill()
    if not ok:
        print(f"replicas: FAILED; logs in {OUT}")
        sys.exit(1)
    print("replicas: passed")
    psql(ADMIN, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    http("POST", CLICKHOUSE + "/", f"DROP DATABASE IF EXISTS replicas_{RUN}".encode())


if __name__ == "__main__":
    main()
