#!/usr/bin/env python3
"""The chaos suite's stand-ins for the world outside Sentinel, in one process:

- a recording action backend (Sentinel's webhook executor points here): every
  execute/rollback delivery is appended to deliveries.jsonl, and each one applied
  (a key is applied once, as the webhook contract asks) to actions.jsonl;
- a Slack Web API (chat.postMessage, chat.update, conversations.history):
  every post is appended to slack.jsonl with its outbox key (metadata).

Nothing here is Sentinel's: a killed Sentinel process cannot lose or hide
what reached these files. Usage: recorder.py PORT DIR
"""

import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIR = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
channel = []  # messages posted, oldest first
applied = {}  # idempotency key -> the answer given when it was applied


def append(name, record):
    with lock, open(f"{DIR}/{name}", "a") as f:
        f.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/api/conversations.history":
            with lock:
                messages = list(reversed(channel))
            return self.answer(200, {"ok": True, "messages": messages, "has_more": False})
        self.answer(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urllib.parse.urlparse(self.path).path
        if path.startswith("/hooks/"):
            verb = path.rsplit("/", 1)[1]
            answer = {"target": body.get("target"), "replicas": 3, "changed": verb != "describe"}
            if verb in ("execute", "rollback"):
                key = body.get("idempotency_key")
                record = {"verb": verb, "key": key, "target": body.get("target"), "action": body.get("action"),
                          "at": time.time()}
                append("deliveries.jsonl", record)
                # As the webhook contract asks of a receiver: a key is applied at most
                # once; a redelivery (a resumed step) gets the first answer again.
                with lock:
                    first = key not in applied
                    if first:
                        applied[key] = answer
                    answer = applied[key]
                if first:
                    append("actions.jsonl", record)
            return self.answer(200, answer)
        if path == "/api/chat.postMessage":
            with lock:
                ts = f"{int(time.time())}.{len(channel):06d}"
                channel.append({"ts": ts, "text": body.get("text"), "metadata": body.get("metadata")})
            key = ((body.get("metadata") or {}).get("event_payload") or {}).get("outbox_key")
            append("slack.jsonl", {"method": "chat.postMessage", "key": key, "ts": ts})
            return self.answer(200, {"ok": True, "channel": body.get("channel"), "ts": ts})
        if path == "/api/chat.update":
            return self.answer(200, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})
        self.answer(404, {"ok": False, "error": "unknown_method"})


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
