// k6: the REST API's reads, as the CLI and a console poll them.
//
//   SENTINEL_URL=… SENTINEL_VIEWER_KEY=<viewer key> RATE=200 DURATION=60s k6 run load-tests/api.js
//
// Each iteration lists runs (the newest 100, or the waiting ones) and reads
// one run in detail; thresholds: < 0.1 % failed, p99 < 100 ms. The server's
// per-key rate limit must allow RATE (load-tests/run.py configures it).
import http from 'k6/http';
import { check } from 'k6';

const base = __ENV.SENTINEL_URL || 'http://127.0.0.1:8080';
const auth = { headers: { Authorization: `Bearer ${__ENV.SENTINEL_VIEWER_KEY}` } };

export const options = {
  scenarios: {
    reads: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '200', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '60s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(99)<100'],
    checks: ['rate>0.999'],
  },
};

export function setup() {
  const res = http.get(`${base}/v1/runs?limit=100`, auth);
  if (res.status !== 200) throw new Error(`listing runs: HTTP ${res.status} ${res.body}`);
  const ids = JSON.parse(res.body).runs.map((r) => r.id);
  if (ids.length === 0) throw new Error('no run to read: run the Slack scenario first');
  return { ids };
}

export default function (data) {
  const list = __ITER % 2 === 0 ? `${base}/v1/runs?limit=100` : `${base}/v1/runs?status=waiting&limit=100`;
  const a = http.get(list, Object.assign({ tags: { kind: 'list' } }, auth));
  const id = data.ids[Math.floor(Math.random() * data.ids.length)];
  const b = http.get(`${base}/v1/runs/${id}`, Object.assign({ tags: { kind: 'detail' } }, auth));
  check(a, { 'list 200': (r) => r.status === 200 });
  check(b, { 'detail 200': (r) => r.status === 200 });
}
