#!/usr/bin/env python3
"""The chaos suite (run it through chaos/run.sh).

Three `sentinel serve` replicas on one PostgreSQL, a tansu broker of the
suite's own (its log in moto's S3, so it survives a restart) and ClickHouse;
CHAOS_INCIDENTS incidents driven through /v1/events (detector incidents) and
/v1/alertmanager (alert incidents, some delivered twice); approvals through
REST and signed Slack clicks, some duplicated; actions land on a recording
backend outside Sentinel (chaos/recorder.py). Meanwhile: SIGKILL of a random
replica every 0.5-3 s and a restart, one PostgreSQL restart, one broker
restart, one ClickHouse outage of 20 s (CHAOS_FAULTS=reduced: fewer kills,
no PostgreSQL or broker restart, a 5 s outage).

Then, once quiescent, it reads the database and the recorder's files and
prints, and asserts: lost runs, stuck runs, duplicate side effects, history
gaps, duplicate incidents per fingerprint, policy limits exceeded, duplicate
Slack posts (all 0), and detection -> resolution p50/p99.
"""

import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ["SENTINEL_BIN"]
N = int(os.environ.get("CHAOS_INCIDENTS", "1000"))
FULL = os.environ.get("CHAOS_FAULTS", "full") != "reduced"
ADMIN = os.environ.get("SENTINEL_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
CLICKHOUSE = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123")
MOTO = os.environ.get("SENTINEL_TEST_MOTO_URL", "http://127.0.0.1:5055")
RUN = f"{int(time.time())}_{os.getpid()}"
OUT = os.environ.get("CHAOS_DIR") or f"/tmp/sentinel-chaos-{RUN}"
PORTS = [18181, 18182, 18183]
RECORDER_PORT, KAFKA_PORT = 18199, 19192
SIGNING = "chaos-signing-secret"
DB = f"sentinel_chaos_{RUN}"
DB_URL = ADMIN.rsplit("/", 1)[0] + "/" + DB
rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
stop = threading.Event()
FAULTS_OFF = threading.Event()
t0 = time.time()


def log(msg):
    print(f"chaos [{time.time() - t0:6.1f}s] {msg}", flush=True)


def psql(url, sql):
    out = subprocess.run(["psql", url, "-AtqF", "\t", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def http(method, url, body=None, headers=None, timeout=5):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return None, b""


# ---- the processes ------------------------------------------------------------

class Replica:
    def __init__(self, i, env):
        self.i, self.port, self.env, self.proc = i, PORTS[i], env, None

    def start(self):
        logf = open(f"{OUT}/serve-{self.i}.log", "a")
        # A restarted replica keeps its name, as a pod does: it takes its Kafka partitions back at once.
        env = dict(self.env, SENTINEL_INSTANCE_ID=f"replica-{self.i}")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--concurrency", "8"],
            env=env, stdout=logf, stderr=logf)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def up(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self):
        return f"http://127.0.0.1:{self.port}"


def wait_healthy(replica, within=60):
    deadline = time.time() + within
    while time.time() < deadline:
        status, _ = http("GET", replica.url() + "/health", timeout=2)
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"replica {replica.i} not healthy within {within}s; see {OUT}/serve-{replica.i}.log")


def start_tansu():
    logf = open(f"{OUT}/tansu.log", "a")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_ENDPOINT=MOTO, AWS_ALLOW_HTTP="true")
    proc = subprocess.Popen(
        ["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{KAFKA_PORT}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{KAFKA_PORT}",
         "--storage-engine", f"s3://chaos-{RUN.replace('_', '-')}/"],
        env=env, stdout=logf, stderr=logf)
    import socket
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", KAFKA_PORT), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("tansu did not listen")


# ---- the load -------------------------------------------------------------------

def now_ms():
    return int(time.time() * 1000)


def post_anywhere(replicas, path, body, headers=None):
    """Posts to a live replica, trying others until one accepts (a killed one refuses)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        r = rng.choice(replicas)
        status, reply = http("POST", r.url() + path, body, headers)
        if status is not None and status < 500 and status != 429:
            return status, reply
        time.sleep(0.1)
    raise RuntimeError(f"nobody took POST {path} for 120 s")


def detector_events(service, base_ts):
    """60 calm points around 10, then 10 around 40: one error-rate spike."""
    events = []
    for k in range(70):
        v = 10.0 + ((k * 37) % 11 - 5) * 0.3 if k < 60 else 40.0 + k % 3
        events.append({"v": 1, "kind": "metric", "ts": base_ts + k * 1000, "service": service,
                       "metric": "error_rate", "value": v, "labels": {"namespace": "chaos"}})
    return events


def alert(service, status="firing"):
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30))
    return {
        "version": "4", "groupKey": f"{{}}:{{alertname=\"HighErrorRate\", service=\"{service}\"}}",
        "status": status, "receiver": "sentinel", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighErrorRate", "service": service},
        "commonLabels": {"alertname": "HighErrorRate", "service": service, "namespace": "chaos",
                         "anomaly_type": "error_rate_spike", "metric": "error_rate", "severity": "warning"},
        "commonAnnotations": {"summary": f"error rate high on {service}", "value": "12"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": {"alertname": "HighErrorRate", "service": service},
                    "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": hashlib.sha1(service.encode()).hexdigest()[:16]}],
    }


def opener(replicas, key, opened):
    auth = {"Authorization": f"Bearer {key}"}
    pace = 10.0 if FULL else 6.0  # incidents a second
    for i in range(N):
        service = f"svc-{i:04d}"
        if i % 2 == 0:
            status, reply = post_anywhere(replicas, "/v1/events", detector_events(service, now_ms() - 75_000), auth)
        else:
            status, reply = post_anywhere(replicas, "/v1/alertmanager", alert(service), auth)
            if i % 6 == 1:  # Alertmanager delivers the same notification twice
                post_anywhere(replicas, "/v1/alertmanager", alert(service), auth)
        if status != 202:
            raise RuntimeError(f"{service}: HTTP {status}: {reply[:200]!r}")
        opened[service] = time.time()
        time.sleep(1.0 / pace)
    log(f"opened {N} incidents")


def slack_click(replicas, run, gate, user):
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
               "actions": [{"action_id": "sentinel_approve", "value": f"{run}/{gate}",
                            "action_ts": f"{time.time():.6f}"}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SIGNING.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": sig}
    return post_anywhere(replicas, "/slack/interactions", body, headers)


def approver(replicas, key, stats):
    auth = {"Authorization": f"Bearer {key}"}
    seen = {}
    while not stop.is_set():
        r = rng.choice(replicas)
        status, body = http("GET", r.url() + "/v1/runs?status=waiting&limit=1000", headers=auth)
        if status != 200:
            time.sleep(0.3)
            continue
        for run in json.loads(body).get("runs", []):
            if run.get("node") != "await_approval":
                continue
            status, body = http("GET", r.url() + f"/v1/runs/{run['id']}", headers=auth)
            if status != 200:
                continue
            gate = (json.loads(body).get("proposal") or {}).get("gate")
            if not gate or seen.get(gate, 0) >= 3:
                continue
            seen[gate] = seen.get(gate, 0) + 1
            via = "slack" if rng.random() < 0.4 else "rest"
            for _ in range(2 if rng.random() < 0.2 else 1):  # some duplicated
                if via == "slack":
                    slack_click(replicas, run["id"], gate, rng.choice(["U1", "U2"]))
                else:
                    post_anywhere(replicas, f"/v1/runs/{run['id']}/approve",
                                  {"gate": gate, "reason": "chaos"}, auth)
                stats[via] += 1
        time.sleep(0.3)


def acted_on():
    """Services an action was applied to at the backend (the recorder's log)."""
    path = f"{OUT}/actions.jsonl"
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {json.loads(line)["target"].rsplit("/", 1)[1] for line in f if line.strip()}


def recoverer(replicas, key, opened):
    """Once an incident is open, its service's metric is back to normal; once
    an action reached an alert's service, its alert clears and Alertmanager
    says so (a resolved notification, sent again now and then as it would)."""
    auth = {"Authorization": f"Bearer {key}"}
    resolved = {}
    while not stop.is_set():
        ts = now_ms()
        services = [s for s, at in list(opened.items()) if time.time() - at > 3]
        for chunk in range(0, len(services), 500):
            events = [{"v": 1, "kind": "metric", "ts": ts, "service": s, "metric": "error_rate",
                       "value": 10.0 if int(s[4:]) % 2 == 0 else 0.0, "labels": {"namespace": "chaos"}}
                      for s in services[chunk:chunk + 500]]
            try:
                post_anywhere(replicas, "/v1/events", events, auth)
            except RuntimeError:
                pass
        for s in acted_on():
            if int(s[4:]) % 2 == 1 and time.time() - resolved.get(s, 0) > 10:
                try:
                    post_anywhere(replicas, "/v1/alertmanager", alert(s, "resolved"), auth)
                    resolved[s] = time.time()
                except RuntimeError:
                    pass
        time.sleep(1.0)


def faults(replicas, tansu_box, counts):
    span = N / (10.0 if FULL else 6.0)
    pg_at, kafka_at, ch_at = span * 0.3, span * 0.5, span * 0.7
    done = set()
    while not FAULTS_OFF.is_set():
        time.sleep(rng.uniform(0.5, 3.0) if FULL else rng.uniform(1.5, 4.0))
        if FAULTS_OFF.is_set():
            break
        victim = rng.choice(replicas)
        victim.kill()
        counts["kills"] += 1
        time.sleep(0.3)
        victim.start()
        elapsed = time.time() - t0
        if FULL and "pg" not in done and elapsed > pg_at:
            done.add("pg")
            log("restarting PostgreSQL")
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
            counts["pg_restarts"] += 1
        if FULL and "kafka" not in done and elapsed > kafka_at:
            done.add("kafka")
            log("restarting the broker")
            tansu_box[0].send_signal(signal.SIGKILL)
            tansu_box[0].wait()
            time.sleep(2)
            tansu_box[0] = start_tansu()
            counts["broker_restarts"] += 1
        if "ch" not in done and elapsed > ch_at:
            done.add("ch")
            outage = 20 if FULL else 5
            log(f"ClickHouse away for {outage}s")
            subprocess.run(["pkill", "-KILL", "-f", "^/usr/sbin/clickhouse-server"])
            threading.Timer(outage, lambda: subprocess.run([f"{ROOT}/scripts/ensure-clickhouse.sh"],
                                                           stdout=subprocess.DEVNULL)).start()
            counts["clickhouse_outages"] += 1


# ---- the verdict ----------------------------------------------------------------------

def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * q)))] if xs else float("nan")


def verdict(opened, stats, counts):
    runs = psql(DB_URL, "SELECT id, status, node, step, COALESCE(correlation_key, ''), "
                        "state::json->'detection'->>'service', COALESCE(state::json->>'mttr_secs', ''), "
                        "COALESCE(state::json->>'outcome', '') FROM runs WHERE graph = 'incident'")
    history = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in
               psql(DB_URL, "SELECT run_id, COUNT(*), MIN(step), MAX(step) FROM run_history GROUP BY run_id")}
    by_service, by_key = {}, {}
    for r in runs:
        by_service.setdefault(r[5], []).append(r)
        by_key.setdefault(r[4], []).append(r)
    lost = [s for s in opened if s not in by_service]
    terminal = {"completed", "failed", "cancelled"}
    stuck = [r for r in runs if r[1] not in terminal and not (r[1] == "waiting" and r[2] == "await_approval")]
    failed = [r for r in runs if r[1] == "failed"]
    gaps = [r for r in runs if history.get(r[0], (0, 0, -1)) != (int(r[3]), 0, int(r[3]) - 1) and int(r[3]) > 0]
    dup_incidents = [k for k, rs in by_key.items() if len(rs) > 1]
    def lines(name):
        path = f"{OUT}/{name}"
        return [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    actions, deliveries = lines("actions.jsonl"), lines("deliveries.jsonl")
    # A side effect is duplicated when the backend applied more actions for a run
    # than the run recorded (a retried step under a new key would do it); a
    # redelivery under the same key is absorbed by the backend, as designed.
    recorded = {r[0]: int(r[1]) for r in psql(DB_URL, "SELECT id, COALESCE(json_array_length(state::json->'actions'), 0) "
                                                      "FROM runs WHERE graph = 'incident'")}
    applied = {}
    for a in actions:
        if a["verb"] == "execute":
            run = a["key"].split(":", 1)[0]
            applied[run] = applied.get(run, 0) + 1
    dup_effects = sum(max(0, n - recorded.get(run, 0)) for run, n in applied.items())
    unapplied = sum(max(0, n - applied.get(run, 0)) for run, n in recorded.items())
    posts = [json.loads(line) for line in open(f"{OUT}/slack.jsonl")] if os.path.exists(f"{OUT}/slack.jsonl") else []
    post_keys = [p["key"] for p in posts]
    dup_posts = len(post_keys) - len(set(post_keys))
    autos = sorted(int(r[0]) for r in psql(DB_URL, "SELECT at FROM ledger WHERE kind = 'auto_approval'"))
    over = 0
    for at in autos:
        in_minute = sum(1 for b in autos if at - 60_000 < b <= at)
        in_hour = sum(1 for b in autos if at - 3_600_000 < b <= at)
        over += in_minute > 5 or in_hour > 30
    mttr = [float(r[6]) for r in runs if r[6]]
    outcomes = {}
    for r in runs:
        outcomes[r[7] or r[1]] = outcomes.get(r[7] or r[1], 0) + 1
    rows = [
        ("incidents opened (accepted by the API)", len(opened)),
        ("incident runs", len(runs)),
        ("lost runs", len(lost)),
        ("runs stuck (not terminal, not waiting on a human)", len(stuck)),
        ("runs failed", len(failed)),
        ("duplicate side effects at the backend", dup_effects),
        ("actions recorded but never applied at the backend", unapplied),
        ("history gaps", len(gaps)),
        ("duplicate incidents per fingerprint", len(dup_incidents)),
        ("policy limits exceeded (5/min, 30/h)", over),
        ("duplicate Slack posts", dup_posts),
    ]
    print("\n== chaos suite ==")
    for name, v in rows:
        print(f"  {name:<52} {v}")
    print(f"  {'actions at the backend (execute + rollback)':<52} {len(actions)}")
    print(f"  {'redeliveries of an applied key (absorbed)':<52} {len(deliveries) - len(actions)}")
    print(f"  {'auto-approvals':<52} {len(autos)}")
    print(f"  {'Slack posts':<52} {len(posts)}")
    print(f"  {'approvals sent (REST, Slack clicks)':<52} {stats['rest']}, {stats['slack']}")
    print(f"  {'faults':<52} {dict(counts)}")
    print(f"  {'detection -> resolution p50 / p99 (s, resolved)':<52} "
          f"{percentile(mttr, 0.5):.2f} / {percentile(mttr, 0.99):.2f} over {len(mttr)}")
    print(f"  {'outcomes':<52} {outcomes}")
    bad = {name: v for name, v in rows[2:] if v}
    if lost:
        print("  lost:", lost[:10])
    if stuck:
        print("  stuck:", [(r[0], r[1], r[2]) for r in stuck[:10]])
    if failed:
        print("  failed:", [r[0] for r in failed[:10]])
    return bad


def main():
    os.makedirs(OUT, exist_ok=True)
    log(f"{N} incidents, {'full' if FULL else 'reduced'} faults, binary {BIN}, files in {OUT}")
    psql(ADMIN, f"CREATE DATABASE {DB}")
    http("PUT", f"{MOTO}/chaos-{RUN.replace('_', '-')}", b"")
    recorder = subprocess.Popen([sys.executable, f"{ROOT}/chaos/recorder.py", str(RECORDER_PORT), OUT])
    tansu_box = [start_tansu()]
    with open(f"{OUT}/sentinel.yaml", "w") as f:
        f.write(f"""unlisted_services:
  kubernetes: {{ namespace: chaos }}
policy:
  auto_approve: ["kubernetes:chaos/*"]
  target_cooldown: 0s
executors:
  dry_run: false
  allowlist: ["kubernetes:chaos/*"]
  webhook: {{ url: "http://127.0.0.1:{RECORDER_PORT}/hooks", kinds: [kubernetes] }}
slack:
  channel: C0CHAOS
  api_url: "http://127.0.0.1:{RECORDER_PORT}"
  approvers: {{ anyone: [U1, U2] }}
""")
    env = dict(os.environ, DATABASE_URL=DB_URL, KAFKA_BROKERS=f"127.0.0.1:{KAFKA_PORT}",
               SENTINEL_KAFKA_TOPIC=f"chaos-{RUN}", SENTINEL_KAFKA_GROUP=f"chaos-{RUN}",
               CLICKHOUSE_URL=CLICKHOUSE, SENTINEL_CLICKHOUSE_DATABASE=f"chaos_{RUN}",
               SENTINEL_CONFIG=f"{OUT}/sentinel.yaml", SLACK_BOT_TOKEN="xoxb-chaos",
               SLACK_SIGNING_SECRET=SIGNING,
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    subprocess.run([BIN, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    key = json.loads(subprocess.run([BIN, "keys", "create", "--direct", "--name", "chaos", "--role", "operator",
                                     "--json"], env=env, check=True, capture_output=True, text=True).stdout)["secret"]
    replicas = [Replica(i, env) for i in range(3)]
    for r in replicas:
        r.start()
    for r in replicas:
        wait_healthy(r)
    log("three replicas up")
    opened, stats, counts = {}, {"rest": 0, "slack": 0}, {"kills": 0, "pg_restarts": 0, "broker_restarts": 0,
                                                          "clickhouse_outages": 0}
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in [
        (approver, (replicas, key, stats)), (recoverer, (replicas, key, opened)),
        (faults, (replicas, tansu_box, counts))]]
    for t in threads:
        t.start()
    try:
        opener(replicas, key, opened)
        # Faults go on a little while the last incidents move, then stop.
        time.sleep(10)
        faults_stop(replicas, threads[2])
        log("faults over; waiting for every incident to finish")
        # Everything settles: every incident finished (the approver decides the rest).
        deadline = time.time() + (900 if FULL else 300)
        while time.time() < deadline:
            rows = psql(DB_URL, "SELECT COUNT(*) FILTER (WHERE status NOT IN ('completed','failed','cancelled')), "
                                "COUNT(DISTINCT state::json->'detection'->>'service') FROM runs WHERE graph = 'incident'")
            unfinished, services = int(rows[0][0]), int(rows[0][1])
            if unfinished == 0 and services >= len(opened):
                break
            time.sleep(2)
        log("quiescent" if time.time() < deadline else "deadline reached")
        stop.set()
        time.sleep(1)
        bad = verdict(opened, stats, counts)
    finally:
        stop.set()
        for r in replicas:
            r.kill()
        tansu_box[0].kill()
        recorder.kill()
        subprocess.run([f"{ROOT}/scripts/ensure-clickhouse.sh"], stdout=subprocess.DEVNULL)
    if bad:
        print(f"chaos: FAILED: {bad}; logs in {OUT}")
        sys.exit(1)
    print("chaos: passed")
    psql(ADMIN, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    http("POST", CLICKHOUSE + "/", f"DROP DATABASE IF EXISTS chaos_{RUN}".encode())


def faults_stop(replicas, fault_thread):
    """Ends the faults and brings every replica up."""
    FAULTS_OFF.set()
    fault_thread.join(timeout=30)
    for r in replicas:
        if not r.up():
            r.start()
    for r in replicas:
        wait_healthy(r)


if __name__ == "__main__":
    main()
