//! The event model and its wire format.
//!
//! One JSON object per event, `kind` saying which, `v` the format version
//! (1, the default; any other is refused), `ts` either RFC 3339 or
//! milliseconds since the Unix epoch:
//!
//! ```json
//! {"v":1,"kind":"metric","ts":"2026-11-23T07:00:00Z","service":"checkout","metric":"http_p99_ms","value":182.5,"labels":{"namespace":"prod"}}
//! {"v":1,"kind":"log","ts":1795417200000,"service":"checkout","level":"error","message":"upstream timeout","trace_id":"4bf92f35"}
//! {"v":1,"kind":"deploy","ts":"2026-11-23T06:58:00Z","service":"checkout","version":"1.42.0","change_type":"rollout","git_sha":"9f1c2e7"}
//! ```
//!
//! Unknown fields are refused: a misspelt `vaule` is a 400, not a silently
//! missing sample. A batch is a JSON array of events or NDJSON (one per line).

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The wire format version this build reads and writes.
pub const VERSION: u32 = 1;

const MAX_NAME: usize = 256;
const MAX_LABELS: usize = 64;
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSample {
    #[serde(with = "ts")]
    pub ts: i64,
    pub service: String,
    pub metric: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    #[serde(with = "ts")]
    pub ts: i64,
    pub service: String,
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployEvent {
    #[serde(with = "ts")]
    pub ts: i64,
    pub service: String,
    pub version: String,
    pub change_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
}

/// One event, without its envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Metric(MetricSample),
    Log(LogLine),
    Deploy(DeployEvent),
}

/// The envelope on the wire: `v` and `kind` beside the event's own fields.
#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u32,
    kind: &'static str,
    #[serde(flatten)]
    event: &'a T,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Metric(e) => Envelope { v: VERSION, kind: "metric", event: e }.serialize(s),
            Event::Log(e) => Envelope { v: VERSION, kind: "log", event: e }.serialize(s),
            Event::Deploy(e) => Envelope { v: VERSION, kind: "deploy", event: e }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::deserialize(d)?;
        let v = match map.remove("v") {
            None => VERSION as u64,
            Some(v) => v.as_u64().ok_or_else(|| D::Error::custom("`v` must be a whole number"))?,
        };
        if v != VERSION as u64 {
            return Err(D::Error::custom(format!(
                "unsupported event version {v}; this server reads version {VERSION}"
            )));
        }
        let kind = match map.remove("kind") {
            Some(serde_json::Value::String(k)) => k,
            Some(_) => return Err(D::Error::custom("`kind` must be a string")),
            None => return Err(D::Error::custom("missing `kind` (metric, log or deploy)")),
        };
        let rest = serde_json::Value::Object(map);
        let event = match kind.as_str() {
            "metric" => Event::Metric(serde_json::from_value(rest).map_err(D::Error::custom)?),
            "log" => Event::Log(serde_json::from_value(rest).map_err(D::Error::custom)?),
            "deploy" => Event::Deploy(serde_json::from_value(rest).map_err(D::Error::custom)?),
            other => return Err(D::Error::custom(format!("unknown kind `{other}` (metric, log or deploy)"))),
        };
        Ok(event)
    }
}

impl Event {
    pub fn service(&self) -> &str {
        match self {
            Event::Metric(e) => &e.service,
            Event::Log(e) => &e.service,
            Event::Deploy(e) => &e.service,
        }
    }

    pub fn ts(&self) -> i64 {
        match self {
            Event::Metric(e) => e.ts,
            Event::Log(e) => e.ts,
            Event::Deploy(e) => e.ts,
        }
    }

    /// Checks what the types cannot: names present and bounded, values finite.
    pub fn validate(&self) -> Result<(), String> {
        let name = |field: &str, v: &str| {
            if v.is_empty() {
                Err(format!("`{field}` is empty"))
            } else if v.len() > MAX_NAME {
                Err(format!("`{field}` is longer than {MAX_NAME} bytes"))
            } else {
                Ok(())
            }
        };
        name("service", self.service())?;
        if self.ts() < 0 {
            return Err("`ts` is before 1970".into());
        }
        match self {
            Event::Metric(m) => {
                name("metric", &m.metric)?;
                if !m.value.is_finite() {
                    return Err("`value` must be a finite number".into());
                }
                if m.labels.len() > MAX_LABELS {
                    return Err(format!("more than {MAX_LABELS} labels"));
                }
                for (k, v) in &m.labels {
                    name("labels key", k)?;
                    if v.len() > MAX_NAME {
                        return Err(format!("label `{k}` is longer than {MAX_NAME} bytes"));
                    }
                }
            }
            Event::Log(l) => {
                name("level", &l.level)?;
                if l.message.len() > MAX_MESSAGE {
                    return Err(format!("`message` is longer than {MAX_MESSAGE} bytes"));
                }
            }
            Event::Deploy(d) => {
                name("version", &d.version)?;
                name("change_type", &d.change_type)?;
            }
        }
        Ok(())
    }
}

/// A batch that could not be read: which event, and why.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("event {index}: {reason}")]
pub struct BatchError {
    /// Zero-based position of the offending event (NDJSON: its line's event index).
    pub index: usize,
    pub reason: String,
}

/// Reads a JSON array of events, or NDJSON, validating each.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, BatchError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let raw: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| BatchError { index: 0, reason: format!("not a JSON array of events: {e}") })?;
        raw.iter().enumerate().map(|(index, r)| one(index, r.get().as_bytes())).collect()
    } else {
        body.split(|b| *b == b'\n')
            .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
            .enumerate()
            .map(|(index, line)| one(index, line))
            .collect()
    }
}

fn one(index: usize, bytes: &[u8]) -> Result<Event, BatchError> {
    let event: Event = serde_json::from_slice(bytes).map_err(|e| BatchError { index, reason: e.to_string() })?;
    event.validate().map_err(|reason| BatchError { index, reason })?;
    Ok(event)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (a space for the
/// `T` and a missing zone, read as UTC, are accepted).
pub fn rfc3339_millis(t: &str) -> Result<i64, String> {
    let at = humantime::parse_rfc3339_weak(t).map_err(|e| format!("{t:?} is not RFC 3339: {e}"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{t:?} is before 1970"))?.as_millis();
    i64::try_from(ms).map_err(|_| format!("{t:?} is too far ahead"))
}

/// `ts` as RFC 3339 or milliseconds on the way in; milliseconds on the way out.
mod ts {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Ts {
            Millis(i64),
            Text(String),
        }
        match Ts::deserialize(d).map_err(|_| D::Error::custom("`ts` must be RFC 3339 text or milliseconds"))? {
            Ts::Millis(ms) => Ok(ms),
            Ts::Text(t) => super::rfc3339_millis(&t).map_err(|e| D::Error::custom(format!("`ts` {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_arrays_and_ndjson_alike() {
        let one = r#"{"kind":"metric","ts":"2026-11-23T07:00:00Z","service":"checkout","metric":"p99","value":1.5}"#;
        let two = r#"{"v":1,"kind":"deploy","ts":1795417200000,"service":"checkout","version":"1.2","change_type":"rollout"}"#;
        let a = parse_batch(format!("[{one},{two}]").as_bytes()).unwrap();
        let b = parse_batch(format!("{one}\n\n{two}\n").as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].ts(), 1_795_417_200_000);
        assert_eq!(a[1].ts(), 1_795_417_200_000);
        // Written back with its envelope, and read again the same.
        let wire = serde_json::to_string(&a[0]).unwrap();
        assert!(wire.starts_with(r#"{"v":1,"kind":"metric","ts":1795417200000"#), "{wire}");
        assert_eq!(serde_json::from_str::<Event>(&wire).unwrap(), a[0]);
    }

    #[test]
    fn names_the_offending_event() {
        let ok = r#"{"kind":"metric","ts":1,"service":"a","metric":"m","value":1}"#;
        let cases = [
            (r#"{"kind":"metric","ts":1,"service":"a","metric":"m","vaule":1}"#, "vaule"),
            (r#"{"kind":"metric","ts":1,"service":"","metric":"m","value":1}"#, "`service` is empty"),
            (r#"{"kind":"trace","ts":1,"service":"a"}"#, "unknown kind"),
            (r#"{"v":2,"kind":"metric","ts":1,"service":"a","metric":"m","value":1}"#, "version 2"),
            (r#"{"kind":"metric","ts":"yesterday","service":"a","metric":"m","value":1}"#, "RFC 3339"),
            (r#"{"kind":"log","ts":1,"service":"a","message":"x"}"#, "level"),
        ];
        for (bad, why) in cases {
            let err = parse_batch(format!("[{ok},{ok},{bad}]").as_bytes()).unwrap_err();
            assert_eq!(err.index, 2, "{bad}");
            assert!(err.reason.contains(why), "{bad}: {}", err.reason);
        }
        assert_eq!(parse_batch(b"[{]").unwrap_err().index, 0);
        assert_eq!(parse_batch(format!("{ok}\nnot json").as_bytes()).unwrap_err().index, 1);
    }
}
