// k6: single-event POST /v1/events at a constant arrival rate.
//
//   SENTINEL_URL=http://127.0.0.1:8080 SENTINEL_API_KEY=snl_… RATE=10000 DURATION=30s \
//     k6 run load-tests/ingest.js
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

export const options = {
  discardResponseBodies: true,
  scenarios: {
    ingest: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: parseInt(__ENV.VUS || '200', 10),
      maxVUs: parseInt(__ENV.MAX_VUS || '600', 10),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(99)<500'],
    dropped_iterations: [`count<${rate}`],
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
