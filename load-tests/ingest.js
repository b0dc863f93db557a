// k6: single-event POST /v1/events at a constant arrival rate.
//
//   SENTINEL_URL=http://127.0.0.1:8080 SENTINEL_API_KEY=snl_… RATE=10000 DURATION=5m \
//     k6 run load-tests/ingest.js
//
// Thresholds: fewer than 0.1 % of requests fail, p99 under 100 ms, and fewer
// than 1 % of the planned iterations dropped (k6 could not keep the rate).
//
// Every request carries one metric sample of one of SERVICES services, in time
// order per virtual user; a request counts as failed unless it is answered 202.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const url = `${__ENV.SENTINEL_URL || 'http://127.0.0.1:8080'}/v1/events`;
const key = __ENV.SENTINEL_API_KEY;
const rate = parseInt(__ENV.RATE || '10000', 10);
const services = parseInt(__ENV.SERVICES || '200', 10);
const accepted = new Counter('events_accepted');

/** `90s`, `5m`, `1h` in seconds. */
function durationSecs(d) {
  const m = /^(\d+)(s|m|h)$/.exec(d);
  if (!m) throw new Error(`DURATION must look like 90s, 5m or 1h, not ${d}`);
  return parseInt(m[1], 10) * { s: 1, m: 60, h: 3600 }[m[2]];
}

export const options = {
  discardResponseBodies: true,
  scenarios: {
    ingest: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '5m',
      preAllocatedVUs: parseInt(__ENV.VUS || '200', 10),
      maxVUs: parseInt(__ENV.MAX_VUS || '600', 10),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(99)<100'],
    dropped_iterations: [`count<${rate * durationSecs(__ENV.DURATION || '5m') / 100}`],
  },
};

const params = { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` } };

export default function () {
  const n = __VU * 1000000 + __ITER;
  const body = JSON.stringify([{
    kind: 'metric',
    ts: 1795417200000 + __ITER * 1000,
    service: `svc-${__VU % services}`,
    metric: 'http_p99_ms',
    value: 100 + (n % 7),
    labels: { vu: `${__VU}` },
  }]);
  const res = http.post(url, body, params);
  if (check(res, { '202': (r) => r.status === 202 })) {
    accepted.add(1);
  }
}
