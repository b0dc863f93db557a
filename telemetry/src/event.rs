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
            None => f64::from(VERSION),
            // 1 and 1.0 are the same number in JSON.
            Some(v) => {
                v.as_f64().filter(|v| v.fract() == 0.0).ok_or_else(|| D::Error::custom("`v` must be a whole number"))?
            }
        };
        if v != f64::from(VERSION) {
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
            } else if v.chars().count() > MAX_NAME {
                Err(format!("`{field}` is longer than {MAX_NAME} characters"))
            } else {
                Ok(())
            }
        };
        name("service", self.service())?;
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
                    if v.chars().count() > MAX_NAME {
                        return Err(format!("label `{k}` is longer than {MAX_NAME} characters"));
                    }
                }
            }
            Event::Log(l) => {
                name("level", &l.level)?;
                if l.message.chars().count() > MAX_MESSAGE {
                    return Err(format!("`message` is longer than {MAX_MESSAGE} characters"));
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

/// The JSON Schema (2020-12, as OpenAPI 3.1 embeds it) of a batch: one
/// event or an array of them, each exactly as [`parse_batch`] accepts it.
/// The OpenAPI document publishes it for `/v1/events`.
pub fn batch_schema() -> serde_json::Value {
    use serde_json::json;
    let name = json!({ "type": "string", "minLength": 1, "maxLength": MAX_NAME });
    let ts = json!({
        "description": "RFC 3339 (years 2000 to 2199; no zone means UTC) or milliseconds since the Unix epoch",
        "oneOf": [
            { "type": "string", "pattern": ts_pattern() },
            { "type": "integer", "minimum": TS_MILLIS.start(), "maximum": TS_MILLIS.end() },
        ],
    });
    let envelope = |kind: &str| {
        (
            json!({ "type": "integer", "minimum": VERSION, "maximum": VERSION, "description": "format version (default 1)" }),
            json!({ "type": "string", "enum": [kind] }),
        )
    };
    let event = |kind: &str, fields: serde_json::Value, required: &[&str]| {
        let (v, k) = envelope(kind);
        let mut properties = json!({ "v": v, "kind": k, "ts": ts.clone(), "service": name.clone() });
        for (key, schema) in fields.as_object().expect("an object") {
            properties[key] = schema.clone();
        }
        let mut all = vec!["kind", "ts", "service"];
        all.extend_from_slice(required);
        json!({ "type": "object", "title": kind, "properties": properties, "required": all, "additionalProperties": false })
    };
    let text_or_null = json!({ "type": ["string", "null"] });
    let one = json!({
        "oneOf": [
            event("metric", json!({
                "metric": name.clone(),
                "value": { "type": "number" },
                "labels": {
                    "type": "object",
                    "maxProperties": MAX_LABELS,
                    "propertyNames": name.clone(),
                    "additionalProperties": { "type": "string", "maxLength": MAX_NAME },
                },
            }), &["metric", "value"]),
            event("log", json!({
                "level": name.clone(),
                "message": { "type": "string", "maxLength": MAX_MESSAGE },
                "trace_id": text_or_null.clone(),
            }), &["level", "message"]),
            event("deploy", json!({
                "version": name.clone(),
                "change_type": name.clone(),
                "git_sha": text_or_null,
            }), &["version", "change_type"]),
        ],
    });
    json!({
        "oneOf": [
            one.clone(),
            { "type": "array", "items": one, "minItems": 1 },
        ],
    })
}

/// A batch that could not be read: which event, and why.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("event {index}: {reason}")]
pub struct BatchError {
    /// Zero-based position of the offending event (NDJSON: its line's event index).
    pub index: usize,
    pub reason: String,
}

/// Reads a JSON array of events, or events one after another (NDJSON, or
/// objects separated by any whitespace), validating each.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, BatchError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let raw: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| BatchError { index: 0, reason: format!("not a JSON array of events: {e}") })?;
        raw.iter().enumerate().map(|(index, r)| one(index, r.get().as_bytes())).collect()
    } else {
        let mut events = Vec::new();
        for (index, raw) in serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>().enumerate() {
            let raw = raw.map_err(|e| BatchError { index, reason: e.to_string() })?;
            events.push(one(index, raw.get().as_bytes())?);
        }
        Ok(events)
    }
}

fn one(index: usize, bytes: &[u8]) -> Result<Event, BatchError> {
    let event: Event = serde_json::from_slice(bytes).map_err(|e| BatchError { index, reason: e.to_string() })?;
    event.validate().map_err(|reason| BatchError { index, reason })?;
    Ok(event)
}

/// Years a written time may name.
const YEAR: &str = "(?:20[0-9][0-9]|21[0-9][0-9])";
/// Those of them that are leap years (2000 is; 2100 is not).
const LEAP_YEAR: &str = "(?:20(?:00|0[48]|[2468][048]|[13579][26])|21(?:0[48]|[2468][048]|[13579][26]))";

/// The RFC 3339 times the wire format reads, as one regular expression in the
/// syntax ECMA-262 (JSON Schema), Python and Rust share: a calendar date of
/// the years 2000 to 2199 (only the days each month has), `T`, `t` or a
/// space, the time to at most nanoseconds (no leap second), and `Z`, `z`, an
/// offset, or nothing for UTC. The OpenAPI document publishes this pattern,
/// and [`rfc3339_millis`] accepts exactly the strings it matches, so a client
/// generated from the document is never refused a time it was allowed.
pub fn ts_pattern() -> String {
    let long = "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])";
    let short = "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)";
    let february = "02-(?:0[1-9]|1[0-9]|2[0-8])";
    format!(
        "^(?:{YEAR}-(?:{long}|{short}|{february})|{LEAP_YEAR}-02-29)[Tt ]\
         (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{{1,9}})?\
         (?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
    )
}

/// Milliseconds a numeric `ts` may hold: 2000-01-01T00:00:00Z to
/// 2199-12-31T23:59:59.999Z, the instants a written time's years cover.
pub const TS_MILLIS: std::ops::RangeInclusive<i64> = 946_684_800_000..=7_258_118_399_999;

/// A time in milliseconds within [`TS_MILLIS`].
pub fn check_millis(ms: i64) -> Result<(), String> {
    if TS_MILLIS.contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "`ts` {ms} is outside {}..={} (milliseconds of the years 2000 to 2199)",
            TS_MILLIS.start(),
            TS_MILLIS.end()
        ))
    }
}

fn ts_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    // Python and ECMA-262 let `$` match before one final newline; Rust's
    // `$` does not, so the same strings match here when it is allowed for.
    RE.get_or_init(|| regex::Regex::new(&format!("{}\n?$", ts_pattern().trim_end_matches('$'))).expect("valid pattern"))
}

/// Milliseconds since the Unix epoch of a time matching [`ts_pattern`].
pub fn rfc3339_millis(t: &str) -> Result<i64, String> {
    if !ts_regex().is_match(t) {
        return Err(format!(
            "{t:?} is not an RFC 3339 time of the years 2000 to 2199 (like 2026-11-23T07:00:00Z or 2026-11-23 08:00:00+01:00)"
        ));
    }
    let t = t.strip_suffix('\n').unwrap_or(t);
    // Date and time as UTC, then the offset taken off.
    let (local, offset_minutes) = match t.len() {
        n if t.ends_with(['Z', 'z']) => (&t[..n - 1], 0),
        n if n > 6 && matches!(t.as_bytes()[n - 6], b'+' | b'-') => {
            let sign = if t.as_bytes()[n - 6] == b'-' { -1 } else { 1 };
            let hours: i64 = t[n - 5..n - 3].parse().expect("two digits");
            let minutes: i64 = t[n - 2..].parse().expect("two digits");
            (&t[..n - 6], sign * (hours * 60 + minutes))
        }
        _ => (t, 0),
    };
    let local = format!("{}T{}Z", &local[..10], &local[11..]);
    let at = humantime::parse_rfc3339_weak(&local).map_err(|e| format!("{t:?} is not RFC 3339: {e}"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{t:?} is before 1970"))?.as_millis();
    Ok(i64::try_from(ms).expect("years before 2200") - offset_minutes * 60_000)
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
            // `1795417200000.0` is the same whole number (JSON Schema's `integer`).
            Whole(f64),
            Text(String),
        }
        let ts = Ts::deserialize(d).map_err(|_| D::Error::custom("`ts` must be RFC 3339 text or milliseconds"))?;
        let ts = match ts {
            Ts::Whole(f) if f.fract() == 0.0 && f.abs() < 1e17 => Ts::Millis(f as i64),
            Ts::Whole(_) => return Err(D::Error::custom("`ts` in milliseconds must be a whole number")),
            other => other,
        };
        match ts {
            Ts::Millis(ms) => super::check_millis(ms).map(|()| ms).map_err(D::Error::custom),
            Ts::Text(t) => super::rfc3339_millis(&t).map_err(|e| D::Error::custom(format!("`ts` {e}"))),
            Ts::Whole(_) => unreachable!("made whole above"),
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
        let ok = r#"{"kind":"metric","ts":1795417200000,"service":"a","metric":"m","value":1}"#;
        let cases = [
            (r#"{"kind":"metric","ts":1795417200000,"service":"a","metric":"m","vaule":1}"#, "vaule"),
            (r#"{"kind":"metric","ts":1795417200000,"service":"","metric":"m","value":1}"#, "`service` is empty"),
            (r#"{"kind":"trace","ts":1795417200000,"service":"a"}"#, "unknown kind"),
            (r#"{"v":2,"kind":"metric","ts":1795417200000,"service":"a","metric":"m","value":1}"#, "version 2"),
            (r#"{"kind":"metric","ts":"yesterday","service":"a","metric":"m","value":1}"#, "RFC 3339"),
            (r#"{"kind":"metric","ts":1,"service":"a","metric":"m","value":1}"#, "outside"),
            (r#"{"kind":"metric","ts":1795417200000.5,"service":"a","metric":"m","value":1}"#, "whole number"),
            (r#"{"kind":"log","ts":1795417200000,"service":"a","message":"x"}"#, "level"),
        ];
        for (bad, why) in cases {
            let err = parse_batch(format!("[{ok},{ok},{bad}]").as_bytes()).unwrap_err();
            assert_eq!(err.index, 2, "{bad}");
            assert!(err.reason.contains(why), "{bad}: {}", err.reason);
        }
        assert_eq!(parse_batch(b"[{]").unwrap_err().index, 0);
        assert_eq!(parse_batch(format!("{ok}\nnot json").as_bytes()).unwrap_err().index, 1);
    }

    #[test]
    fn reads_one_event_or_several_objects_however_spaced() {
        let pretty = "{\n  \"kind\": \"metric\",\n  \"ts\": 1795417200000.0,\n  \"v\": 1.0,\n  \"service\": \"a\", \"metric\": \"m\", \"value\": 1\n}";
        assert_eq!(parse_batch(pretty.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_batch(format!("{pretty} {pretty}").as_bytes()).unwrap().len(), 2);
        assert_eq!(parse_batch(b"  \n").unwrap(), vec![]);
    }

    #[test]
    fn times_with_offsets_and_only_real_dates() {
        let utc = rfc3339_millis("2026-11-23T07:00:00Z").unwrap();
        assert_eq!(utc, 1_795_417_200_000);
        for same in [
            "2026-11-23T08:00:00+01:00",
            "2026-11-23t02:30:00-04:30",
            "2026-11-23 07:00:00",
            "2026-11-23T07:00:00.000000000z",
            "2026-11-23T07:00:00Z\n",
        ] {
            assert_eq!(rfc3339_millis(same), Ok(utc), "{same:?}");
        }
        assert_eq!(rfc3339_millis("2026-11-23T07:00:00.25Z"), Ok(utc + 250));
        for leap in ["2000-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2196-02-29T00:00:00Z"] {
            assert!(rfc3339_millis(leap).is_ok(), "{leap}");
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T23:59:60Z",
            "2026-11-23T24:00:00Z",
            "1999-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2026-11-23T07:00:00+24:00",
            "2026-11-23T07:00:00.1234567890Z",
            "2026-11-23",
            "2026-11-23T07:00:00Z\n\n",
            " 2026-11-23T07:00:00Z",
        ] {
            assert!(rfc3339_millis(bad).is_err(), "{bad:?}");
        }
    }

    /// Every day of every year the pattern allows parses, to the instant
    /// humantime gives the same day at midnight UTC: the pattern promises
    /// nothing the parser refuses.
    #[test]
    fn every_day_the_pattern_allows_parses() {
        let mut expected = *TS_MILLIS.start();
        let mut days = 0;
        for year in 2000..2200 {
            for month in 1..=12 {
                for day in 1..=31 {
                    let text = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
                    if ts_regex().is_match(&text) {
                        assert_eq!(rfc3339_millis(&text), Ok(expected), "{text}");
                        expected += 86_400_000;
                        days += 1;
                    }
                }
            }
        }
        assert_eq!(expected, TS_MILLIS.end() + 1, "the days run up to the end of the numeric range");
        assert_eq!(days, 73_049, "200 years of 365 days and 49 leap days");
    }
}
