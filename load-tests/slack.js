// k6: a storm of Slack button clicks on incidents that wait for approval.
//
//   SENTINEL_URL=… SENTINEL_API_KEY=<ingest key> SENTINEL_VIEWER_KEY=<viewer key> \
//   SLACK_SIGNING_SECRET=… INCIDENTS=200 RATE=500 DURATION=60s k6 run load-tests/slack.js
//
// setup() opens INCIDENTS incidents through /v1/alertmanager and waits until
// each waits for a decision on a gate. Then clicks arrive at RATE per second:
// each one an Approve on a random incident's gate by a random approver, signed
// as Slack signs (HMAC-SHA256 of `v0:TS:BODY`). The first click on a gate
// decides it (200); a repeat of the same click is answered 200 "already
// recorded"; anyone else's later click 409 with who decided first, or that the
// incident has moved on. Any other answer fails. Whether each gate got exactly
// one decision is checked afterwards against the database (load-tests/run.py),
// which gives the server a database of its own, so every waiting incident
// there is one of ours.
import http from 'k6/http';
import { check, sleep } from 'k6';
import crypto from 'k6/crypto';
import { Counter } from 'k6/metrics';

const base = __ENV.SENTINEL_URL || 'http://127.0.0.1:8080';
const ingestKey = __ENV.SENTINEL_API_KEY;
const viewerKey = __ENV.SENTINEL_VIEWER_KEY;
const secret = __ENV.SLACK_SIGNING_SECRET;
const incidents = parseInt(__ENV.INCIDENTS || '200', 10);
const rate = parseInt(__ENV.RATE || '500', 10);
const approvers = ['U1', 'U2', 'U3', 'U4', 'U5'];
const decided = new Counter('clicks_deciding');
const told = new Counter('clicks_told_who_decided');
const repeated = new Counter('clicks_already_recorded');
http.setResponseCallback(http.expectedStatuses(200, 202, 409));

export const options = {
  discardResponseBodies: false,
  setupTimeout: '300s',
  scenarios: {
    clicks: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '60s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{kind:click}': ['p(99)<100'],
    checks: ['rate>0.999'],
  },
};

function alert(service) {
  const starts = new Date(Date.now() - 30000).toISOString();
  const labels = { alertname: 'HighErrorRate', service, namespace: 'load' };
  return JSON.stringify({
    version: '4', groupKey: `{}:{alertname="HighErrorRate", service="${service}"}`,
    status: 'firing', receiver: 'sentinel', truncatedAlerts: 0,
    groupLabels: { alertname: 'HighErrorRate', service },
    commonLabels: Object.assign({ anomaly_type: 'error_rate_spike', metric: 'error_rate', severity: 'warning' }, labels),
    commonAnnotations: { summary: `error rate high on ${service}`, value: '12' },
    externalURL: 'http://alertmanager:9093',
    alerts: [{ status: 'firing', labels, annotations: {}, startsAt: starts, endsAt: '0001-01-01T00:00:00Z',
      generatorURL: '', fingerprint: `load-${service}` }],
  });
}

export function setup() {
  const tag = `${Date.now()}`;
  for (let i = 0; i < incidents; i++) {
    const res = http.post(`${base}/v1/alertmanager`, alert(`storm-${tag}-${i}`),
      { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ingestKey}` } });
    if (res.status !== 202) throw new Error(`opening incident ${i}: HTTP ${res.status} ${res.body}`);
  }
  // Wait (up to setupTimeout) until every one of them waits on a gate.
  const auth = { headers: { Authorization: `Bearer ${viewerKey}` } };
  for (;;) {
    const res = http.get(`${base}/v1/runs?status=waiting&graph=incident&limit=1000`, auth);
    const runs = res.status === 200 ? JSON.parse(res.body).runs : [];
    const ours = runs.filter((r) => r.node === 'await_approval');
    if (ours.length >= incidents) {
      const gates = ours.map((r) => {
        const d = JSON.parse(http.get(`${base}/v1/runs/${r.id}`, auth).body);
        if (!d.proposal || !d.proposal.gate) throw new Error(`run ${r.id} waits without a proposal`);
        return `${r.id}/${d.proposal.gate}`;
      });
      return { gates, tag };
    }
    sleep(1);
  }
}

export default function (data) {
  const value = data.gates[Math.floor(Math.random() * data.gates.length)];
  const user = approvers[Math.floor(Math.random() * approvers.length)];
  const payload = JSON.stringify({
    type: 'block_actions', user: { id: user, username: user.toLowerCase() },
    actions: [{ action_id: 'sentinel_approve', value, action_ts: `${Date.now() / 1000}` }],
  });
  const body = `payload=${encodeURIComponent(payload)}`;
  const ts = `${Math.floor(Date.now() / 1000)}`;
  const sig = `v0=${crypto.hmac('sha256', secret, `v0:${ts}:${body}`, 'hex')}`;
  const res = http.post(`${base}/slack/interactions`, body, {
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Slack-Request-Timestamp': ts, 'X-Slack-Signature': sig },
    tags: { kind: 'click' },
  });
  check(res, { '200 or 409': (r) => r.status === 200 || r.status === 409 });
  if (res.status === 409) {
    told.add(1);
  } else if (res.status === 200) {
    const text = JSON.parse(res.body).text || '';
    if (text === 'already recorded') repeated.add(1); else decided.add(1);
  }
}
