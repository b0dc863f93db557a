//! Alertmanager's webhook (payload format version 4) into detections.
//!
//! One notification is one alert group: it becomes one detection whose
//! identity is the group key, so every later notification of the same group
//! (more alerts firing, repeats) attaches to the same incident instead of
//! opening one per alert. Alertmanager's own alert fingerprints are kept
//! verbatim. Fields this version does not know are ignored: newer
//! Alertmanagers add some.

use std::collections::BTreeMap;

use engine::Timestamp;
use nodes::catalog::deployment_of_pod;
use nodes::incident::{Detection, Source};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    /// `firing` while any alert of the group fires, `resolved` once none does.
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
    #[serde(default, deserialize_with = "whole_number")]
    pub truncated_alerts: u64,
}

/// A count, written `3` or `3.0` (the same number in JSON).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64))
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a count")))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// What a notification means for incidents.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Alerts of the group fire: open the group's incident, or attach to it.
    Firing(Detection),
    /// Every alert of the group is resolved: the condition cleared.
    Resolved(Detection),
}

/// Labels that name what an alert is about, most specific first (after a
/// `deployment`, and the Deployment a `pod` label's name shows). The workflow
/// then maps the subject to a catalogued service.
const SUBJECT_LABELS: [&str; 5] = ["node", "service", "app", "job", "instance"];

/// The rule expression Prometheus puts in an alert's `generatorURL`
/// (`…/graph?g0.expr=…&g0.tab=1`).
fn expression(generator_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(generator_url).ok()?;
    let expr = url.query_pairs().find(|(k, _)| k == "g0.expr")?.1.into_owned();
    (!expr.trim().is_empty()).then_some(expr)
}

/// Reads a webhook body; the error says what is wrong with it.
pub fn parse(body: &[u8]) -> Result<Notification, String> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager notification: {e}"))?;
    if n.version != "4" {
        return Err(format!("payload version {:?} is not supported (version 4 is)", n.version));
    }
    if n.group_key.is_empty() {
        return Err("groupKey is empty".into());
    }
    if !matches!(n.status.as_str(), "firing" | "resolved") {
        return Err(format!("status {:?} is neither firing nor resolved", n.status));
    }
    if n.alerts.is_empty() {
        return Err("the group has no alerts".into());
    }
    for (i, a) in n.alerts.iter().enumerate() {
        if !matches!(a.status.as_str(), "firing" | "resolved") {
            return Err(format!("alerts[{i}].status {:?} is neither firing nor resolved", a.status));
        }
        if a.fingerprint.is_empty() {
            return Err(format!("alerts[{i}] has no fingerprint"));
        }
        parse_time(&a.starts_at).map_err(|e| format!("alerts[{i}].startsAt: {e}"))?;
    }
    Ok(n)
}

/// The JSON Schema (2020-12) of a notification exactly as [`parse`] accepts
/// it: Alertmanager's webhook payload, version 4. Fields Sentinel does not
/// read are allowed, as Alertmanager adds some between releases.
pub fn notification_schema() -> serde_json::Value {
    use serde_json::json;
    let labels = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    let status = json!({ "type": "string", "enum": ["firing", "resolved"] });
    let alert = json!({
        "type": "object",
        "properties": {
            "status": status.clone(),
            "labels": labels.clone(),
            "annotations": labels.clone(),
            "startsAt": { "type": "string", "pattern": crate::event::ts_pattern() },
            "endsAt": { "type": "string" },
            "generatorURL": { "type": "string" },
            "fingerprint": { "type": "string", "minLength": 1 },
        },
        "required": ["status", "startsAt", "fingerprint"],
    });
    json!({
        "type": "object",
        "properties": {
            "version": { "type": "string", "enum": ["4"] },
            "groupKey": { "type": "string", "minLength": 1 },
            "status": status,
            "receiver": { "type": "string" },
            "groupLabels": labels.clone(),
            "commonLabels": labels.clone(),
            "commonAnnotations": labels,
            "externalURL": { "type": "string" },
            "alerts": { "type": "array", "items": alert, "minItems": 1 },
            "truncatedAlerts": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
        },
        "required": ["version", "groupKey", "status", "alerts"],
    })
}

fn parse_time(t: &str) -> Result<Timestamp, String> {
    crate::event::rfc3339_millis(t).map(Timestamp)
}

impl Notification {
    /// The detection this group stands for, and whether it fires or cleared.
    pub fn change(&self) -> Change {
        let firing: Vec<&Alert> = self.alerts.iter().filter(|a| a.status == "firing").collect();
        let relevant: Vec<&Alert> = if firing.is_empty() { self.alerts.iter().collect() } else { firing };
        let first = relevant[0];
        let label = |name: &str| {
            self.common_labels.get(name).or_else(|| self.group_labels.get(name)).or_else(|| first.labels.get(name))
        };
        let alertname = label("alertname").cloned().unwrap_or_else(|| "unnamed".into());
        let service = label("deployment")
            .map(String::as_str)
            .or_else(|| label("pod").and_then(|p| deployment_of_pod(p)))
            .or_else(|| SUBJECT_LABELS.iter().find_map(|l| label(l)).map(String::as_str))
            .unwrap_or(&alertname)
            .to_owned();
        let mut labels = first.labels.clone();
        labels.extend(self.common_labels.clone());
        let started_at = relevant.iter().filter_map(|a| parse_time(&a.starts_at).ok()).min().unwrap_or(Timestamp(0));
        let observed = first
            .annotations
            .get("value")
            .or_else(|| self.common_annotations.get("value"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(relevant.len() as f64);
        let detection = Detection {
            service,
            anomaly_type: labels.get("anomaly_type").cloned().unwrap_or_else(|| "alert".into()),
            metric: labels.get("metric").cloned().unwrap_or_else(|| alertname.clone()),
            observed,
            baseline_mean: 0.0,
            baseline_stddev: 0.0,
            started_at,
            source: Source::Alertmanager {
                group_key: self.group_key.clone(),
                alertname,
                fingerprints: self.alerts.iter().map(|a| a.fingerprint.clone()).collect(),
                expr: expression(&first.generator_url),
                group_labels: self.group_labels.clone(),
            },
            labels,
            annotations: {
                let mut a = self.common_annotations.clone();
                for (k, v) in &first.annotations {
                    a.entry(k.clone()).or_insert_with(|| v.clone());
                }
                a
            },
        };
        if self.status == "resolved" {
            Change::Resolved(detection)
        } else {
            Change::Firing(detection)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as Alertmanager 0.27 sends it, plus a field from a later version.
    fn body(status: &str, alerts: &str) -> String {
        format!(
            r#"{{"receiver":"sentinel","status":"{status}","alerts":[{alerts}],
            "groupLabels":{{"alertname":"KubePodCrashLooping"}},
            "commonLabels":{{"alertname":"KubePodCrashLooping","namespace":"shop","severity":"critical","deployment":"checkout"}},
            "commonAnnotations":{{"summary":"Pod is crash looping."}},
            "externalURL":"http://alertmanager:9093","version":"4",
            "groupKey":"{{}}:{{alertname=\"KubePodCrashLooping\"}}","truncatedAlerts":0,"newerField":{{"x":1}}}}"#
        )
    }

    fn alert(status: &str, pod: &str, fp: &str, starts: &str) -> String {
        format!(
            r#"{{"status":"{status}","labels":{{"alertname":"KubePodCrashLooping","namespace":"shop","pod":"{pod}","deployment":"checkout"}},
            "annotations":{{"description":"restarting"}},"startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://prometheus:9090/graph?g0.expr=increase%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+0&g0.tab=1","fingerprint":"{fp}"}}"#
        )
    }

    #[test]
    fn a_group_is_one_detection_with_alertmanagers_fingerprints() {
        let a = alert("firing", "checkout-1", "a1b2c3d4e5f60718", "2026-11-23T07:01:00Z");
        let b = alert("firing", "checkout-2", "0f1e2d3c4b5a6978", "2026-11-23T07:00:30.5Z");
        let n = parse(body("firing", &format!("{a},{b}")).as_bytes()).unwrap();
        let Change::Firing(d) = n.change() else { panic!("firing") };
        assert_eq!(d.service, "checkout");
        assert_eq!(d.labels["namespace"], "shop");
        assert_eq!(d.started_at, Timestamp(1_795_417_230_500), "the earliest startsAt");
        let Source::Alertmanager { group_key, alertname, fingerprints, expr, group_labels } = &d.source else {
            panic!()
        };
        assert_eq!(group_labels.get("alertname").map(String::as_str), Some("KubePodCrashLooping"));
        assert_eq!(expr.as_deref(), Some("increase(kube_pod_container_status_restarts_total[10m]) > 0"));
        assert_eq!(group_key, r#"{}:{alertname="KubePodCrashLooping"}"#);
        assert_eq!(alertname, "KubePodCrashLooping");
        assert_eq!(fingerprints, &["a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"]);
        // The group is the identity: a later notification with another alert has the same fingerprint.
        let c = alert("firing", "checkout-3", "9999999999999999", "2026-11-23T07:05:00Z");
        let later = parse(body("firing", &c).as_bytes()).unwrap();
        let Change::Firing(d2) = later.change() else { panic!("firing") };
        assert_eq!(nodes::incident::fingerprint(&d), nodes::incident::fingerprint(&d2));
    }

    #[test]
    fn resolved_groups_and_bad_bodies() {
        let a = alert("resolved", "checkout-1", "a1b2c3d4e5f60718", "2026-11-23T07:01:00Z");
        let n = parse(body("resolved", &a).as_bytes()).unwrap();
        assert!(matches!(n.change(), Change::Resolved(_)));
        let v3 = body("firing", &a).replace(r#""version":"4""#, r#""version":"3""#);
        assert!(parse(v3.as_bytes()).unwrap_err().contains("version"));
        assert!(parse(body("firing", "").as_bytes()).unwrap_err().contains("no alerts"));
        assert!(parse(b"{").unwrap_err().contains("not an Alertmanager notification"));
        let bad_time = alert("firing", "p", "f", "yesterday");
        assert!(parse(body("firing", &bad_time).as_bytes()).unwrap_err().contains("startsAt"));
    }

    #[test]
    fn the_subject_is_the_workload_not_the_exporter_and_annotations_are_kept() {
        // kube-state-metrics alerts carry the exporter's own `service` and `job`.
        let labels = r#""alertname":"KubePodNotReady","namespace":"shop","pod":"cart-5f7b9c8d4-qx2lp","service":"kube-state-metrics","job":"kube-state-metrics""#;
        let body = format!(
            r#"{{"status":"firing","alerts":[{{"status":"firing","labels":{{{labels}}},"annotations":{{"summary":"Pod not ready.","runbook_url":"https://runbooks.example/podnotready"}},
            "startsAt":"2026-11-23T07:01:00Z","fingerprint":"ab"}}],"commonLabels":{{{labels}}},"commonAnnotations":{{"description":"for 15 minutes"}},
            "version":"4","groupKey":"g"}}"#
        );
        let Change::Firing(d) = parse(body.as_bytes()).unwrap().change() else { panic!("firing") };
        assert_eq!(d.service, "cart");
        assert_eq!(d.annotations["summary"], "Pod not ready.");
        assert_eq!(d.annotations["description"], "for 15 minutes");
        assert_eq!(d.annotations["runbook_url"], "https://runbooks.example/podnotready");
        let node = body.replace(r#""pod":"cart-5f7b9c8d4-qx2lp""#, r#""node":"ip-10-0-1-7""#);
        let Change::Firing(d) = parse(node.as_bytes()).unwrap().change() else { panic!("firing") };
        assert_eq!(d.service, "ip-10-0-1-7");
        assert_eq!(deployment_of_pod("checkout-canary"), None);
        assert_eq!(deployment_of_pod("web-api-7d9f8b6c5-x2x9q"), Some("web-api"));
    }
}
