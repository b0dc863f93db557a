#!/usr/bin/env python3
"""Writes the labelled set semantic memory is measured on (lab/memory/).

Deterministic (seeded): the test command regenerates it and compares.

  python3 scripts/make-memory-pairs.py lab/memory

Two files:

* pairs.json: pairs of detections (an open incident's and a new one), each
  labelled `same` (the new detection is the same problem, or a downstream
  symptom of it, and should join the open incident) or not. Four kinds, as
  an on-call engineer meets them:
    - reworded: one problem on one service, reported twice in other words
      (an alert and a detector, two alerts from two rule sets);     same
    - cascade: the open incident's service fails, a service that depends
      on it shows the symptom a caller shows (errors, latency, timeouts); same
    - same_service: one service, two different problems;        not same
    - downstream_unrelated: a service that depends on the incident's one,
      with a problem of its own (a disk, a certificate);        not same
    - unrelated: services with no dependency between them;      not same
* retrieval.json: past incidents (resolved, with their action, outcome and
  time to recover; none, one or two of each problem on each service) and
  new detections, each naming the past incidents that are the same problem
  on the same service: the ones retrieval should find.

The catalogue of services (with dependencies) is in both files, so the
evaluation decides with the same catalogue the generator labelled with.
"""

import json
import random
import sys
from pathlib import Path

SEED = 20261207

# service -> the services it depends on (calls).
SERVICES = {
    "checkout": ["payments", "inventory", "cart"],
    "cart": ["inventory", "sessions"],
    "payments": ["ledger", "fraud"],
    "fraud": ["feature-store"],
    "inventory": ["orders-db"],
    "orders": ["orders-db", "payments"],
    "search": ["search-index"],
    "search-index": [],
    "sessions": ["redis-cache"],
    "redis-cache": [],
    "ledger": ["ledger-db"],
    "ledger-db": [],
    "orders-db": [],
    "feature-store": [],
    "notifications": ["email-gateway"],
    "email-gateway": [],
    "reports": ["ledger-db"],
    "auth": ["sessions"],
}

# A problem, and the ways it is reported: detector metrics (the anomaly type
# follows from the metric, as the pipeline derives it) and alerts (name,
# summary wording, the anomaly_type label some rule sets add).
PROBLEMS = {
    "latency": {
        "metrics": ["p99_latency_ms", "http_request_duration_p99", "response_time_p95_ms", "latency_p99_seconds"],
        "anomaly": "latency_spike",
        "alerts": [
            ("HighRequestLatency", "p99 latency of {s} is above 500 ms"),
            ("SlowResponses", "{s} responds slowly"),
            ("LatencySLOBurn", "{s} is burning its latency SLO budget"),
            ("APIHighResponseTime", "high response time on {s} API"),
            ("HighLatency", "{s} requests are taking too long"),
        ],
    },
    "errors": {
        "metrics": ["http_5xx_ratio", "error_rate", "failed_requests_ratio", "errors_per_second"],
        "anomaly": "error_rate_spike",
        "alerts": [
            ("HighErrorRate", "{s} error rate above 5%"),
            ("HTTP5xxSpike", "{s} returns many 5xx responses"),
            ("ErrorBudgetBurn", "{s} is burning its error budget fast"),
            ("RequestsFailing", "requests to {s} are failing"),
        ],
    },
    "memory": {
        "metrics": ["container_memory_rss", "heap_used_bytes", "memory_working_set_bytes"],
        "anomaly": "memory_leak",
        "alerts": [
            ("KubePodOOMKilled", "a {s} pod was OOM killed"),
            ("ContainerMemoryHigh", "{s} container memory near its limit"),
            ("HighMemoryUsage", "memory usage of {s} keeps growing"),
        ],
    },
    "cpu": {
        "metrics": ["cpu_usage_ratio", "container_cpu_usage_seconds", "cpu_throttled_ratio"],
        "anomaly": "cpu_saturation",
        "alerts": [
            ("CPUThrottlingHigh", "{s} is CPU throttled"),
            ("HighCPUUsage", "{s} CPU usage above 90%"),
            ("ContainerCPUSaturated", "{s} containers saturate their CPU"),
        ],
    },
    "connections": {
        "metrics": ["db_connections_used_ratio", "connection_pool_waiting", "pool_wait_ms"],
        "anomaly": "db_connection_exhaustion",
        "alerts": [
            ("DatabaseConnectionPoolExhausted", "{s} has no free database connections"),
            ("PostgresTooManyConnections", "{s} is near max_connections"),
            ("ConnectionPoolSaturated", "connection pool of {s} is saturated"),
        ],
    },
    "lag": {
        "metrics": ["kafka_consumer_lag", "queue_lag_messages", "consumer_group_lag"],
        "anomaly": "consumer_lag",
        "alerts": [
            ("KafkaConsumerLagHigh", "{s} consumer lag is growing"),
            ("ConsumerGroupLagging", "{s} falls behind on its topic"),
            ("QueueBacklogGrowing", "the {s} queue backlog keeps growing"),
        ],
    },
    "crashloop": {
        "metrics": ["pod_restarts_total", "container_restarts"],
        "anomaly": "crash_loop",
        "alerts": [
            ("KubePodCrashLooping", "{s} pod is crash looping"),
            ("PodRestartingOften", "{s} pods restart again and again"),
            ("ContainerRestarts", "{s} container keeps restarting"),
        ],
    },
    "disk": {
        "metrics": ["disk_used_ratio", "filesystem_used_percent"],
        "anomaly": "disk_full",
        "alerts": [
            ("NodeDiskFull", "disk of {s} host almost full"),
            ("DiskSpaceLow", "{s} is running out of disk space"),
            ("FilesystemAlmostFull", "filesystem of {s} above 90%"),
        ],
    },
    "certificate": {
        "metrics": ["tls_cert_expiry_seconds"],
        "anomaly": "certificate_expiry",
        "alerts": [
            ("CertificateExpiringSoon", "TLS certificate of {s} expires in 3 days"),
            ("SSLCertExpiry", "{s} certificate is about to expire"),
        ],
    },
}

# What a caller shows when a service it depends on fails.
CALLER_SYMPTOMS = ["latency", "errors"]
# A service's own trouble that its dependencies do not cause.
OWN_TROUBLE = ["disk", "certificate", "memory", "cpu", "crashloop"]

EXTRA_LABELS = [{}, {"team": "shop"}, {"env": "prod"}, {"region": "eu-west-1"}]


def dependents(service):
    return [s for s, deps in SERVICES.items() if service in deps]


def detection(rng, service, problem, started_at):
    p = PROBLEMS[problem]
    labels = dict(rng.choice(EXTRA_LABELS))
    if rng.random() < 0.5:
        metric = rng.choice(p["metrics"])
        return {
            "service": service,
            "anomaly_type": p["anomaly"],
            "metric": metric,
            "source": "detector",
            "labels": labels,
            "started_at": started_at,
        }
    name, summary = rng.choice(p["alerts"])
    if rng.random() < 0.5:
        labels["anomaly_type"] = p["anomaly"]
    labels["pod"] = f"{service}-{rng.randrange(16**6):06x}-{rng.randrange(36**5):05d}"
    return {
        "service": service,
        "anomaly_type": labels.get("anomaly_type", "alert"),
        "metric": name,
        "source": "alertmanager",
        "alertname": name,
        "summary": summary.format(s=service),
        "labels": labels,
        "started_at": started_at,
    }


def reworded(rng, a):
    """The same problem as `a`, told differently (another report of it)."""
    for _ in range(20):
        b = detection(rng, a["service"], a["problem"], a["started_at"] + rng.randrange(30_000, 600_000))
        if (b["source"], b["metric"]) != (a["source"], a["metric"]):
            return b
    return b


def pairs(rng):
    out = []
    services = list(SERVICES)
    kinds = ["reworded"] * 110 + ["cascade"] * 70 + ["same_service"] * 90 + ["downstream_unrelated"] * 40 + [
        "unrelated"
    ] * 50
    for kind in kinds:
        t0 = 1_764_000_000_000 + rng.randrange(10**9)
        if kind == "reworded":
            s = rng.choice(services)
            problem = rng.choice(list(PROBLEMS))
            a = detection(rng, s, problem, t0)
            a["problem"] = problem
            b = reworded(rng, a)
            same = True
        elif kind == "cascade":
            s = rng.choice([x for x in services if dependents(x)])
            down = rng.choice(dependents(s))
            problem = rng.choice(list(PROBLEMS))
            a = detection(rng, s, problem, t0)
            b = detection(rng, down, rng.choice(CALLER_SYMPTOMS), t0 + rng.randrange(10_000, 300_000))
            same = True
        elif kind == "same_service":
            s = rng.choice(services)
            pa, pb = rng.sample(list(PROBLEMS), 2)
            a = detection(rng, s, pa, t0)
            b = detection(rng, s, pb, t0 + rng.randrange(30_000, 600_000))
            same = False
        elif kind == "downstream_unrelated":
            s = rng.choice([x for x in services if dependents(x)])
            down = rng.choice(dependents(s))
            a = detection(rng, s, rng.choice(list(PROBLEMS)), t0)
            b = detection(rng, down, rng.choice(OWN_TROUBLE), t0 + rng.randrange(10_000, 300_000))
            same = False
        else:
            while True:
                sa, sb = rng.sample(services, 2)
                if sb not in SERVICES[sa] and sa not in SERVICES[sb]:
                    break
            problem = rng.choice(list(PROBLEMS))
            a = detection(rng, sa, problem, t0)
            b = detection(rng, sb, rng.choice([problem, rng.choice(list(PROBLEMS))]), t0 + rng.randrange(10_000, 300_000))
            same = False
        a.pop("problem", None)
        out.append({"kind": kind, "same": same, "open": a, "new": b})
    return out


OUTCOMES = {
    "latency": [("kubernetes", "rollback_deployment", "resolved: p99 back under 300 ms")],
    "errors": [("kubernetes", "rollback_deployment", "resolved: 5xx ratio back to 0.1%")],
    "memory": [("kubernetes", "set_memory_limit", "resolved: no OOM kill since")],
    "cpu": [("kubernetes", "scale_deployment", "resolved: CPU at 55% with more replicas")],
    "connections": [("kubernetes", "restart_deployment", "resolved: pool back to 20% used")],
    "lag": [("kubernetes", "scale_deployment", "resolved: lag drained in 6 minutes")],
    "crashloop": [("kubernetes", "rollback_deployment", "resolved: pods ready")],
    "disk": [("ec2", "reboot_instance", "escalated: disk still full after the action")],
    "certificate": [("kubernetes", "restart_deployment", "escalated: certificate renewal needs a human")],
}


def retrieval(rng):
    """Past incidents on every service, and queries naming their matches."""
    past = []
    by_key = {}
    for s in SERVICES:
        for problem in PROBLEMS:
            for _ in range(rng.choice([0, 1, 1, 2])):
                t0 = 1_760_000_000_000 + rng.randrange(10**9)
                d = detection(rng, s, problem, t0)
                executor, action, outcome = rng.choice(OUTCOMES[problem])
                past.append(
                    {
                        "id": f"past-{len(past):03d}",
                        "detection": d,
                        "cause": f"intrinsic:{PROBLEMS[problem]['anomaly']}",
                        "action": {"executor": executor, "action": action, "target": s},
                        "outcome": outcome,
                        "mttr_secs": rng.randrange(120, 3600),
                    }
                )
                by_key.setdefault((s, problem), []).append(past[-1]["id"])
    queries = []
    keys = sorted(by_key)
    for _ in range(200):
        s, problem = rng.choice(keys)
        d = detection(rng, s, problem, 1_765_000_000_000 + rng.randrange(10**9))
        queries.append({"detection": d, "expected": by_key[(s, problem)]})
    return past, queries


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make-memory-pairs.py OUT_DIR")
    rng = random.Random(SEED)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    catalogue = [{"name": s, "depends_on": deps} for s, deps in SERVICES.items()]
    ps = pairs(rng)
    (out / "pairs.json").write_text(json.dumps({"services": catalogue, "pairs": ps}, indent=1) + "\n")
    past, queries = retrieval(rng)
    (out / "retrieval.json").write_text(
        json.dumps({"services": catalogue, "past": past, "queries": queries}, indent=1) + "\n"
    )
    print(f"{len(ps)} pairs, {len(past)} past incidents, {len(queries)} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
