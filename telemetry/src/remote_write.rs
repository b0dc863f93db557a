//! Prometheus remote write 1.0 into events: a snappy-compressed (block
//! format) protobuf `prometheus.WriteRequest`, each sample of each series a
//! metric event. The series' `__name__` is the metric; its `service` label
//! (else `app`, else the scrape `job`) the service; its other labels stay
//! labels. Stale markers and other non-finite values carry no reading and
//! are skipped (counted).

use std::collections::BTreeMap;

use crate::event::{Event, MetricSample};

/// `prometheus.WriteRequest` (remote write 1.0); metadata (field 3) is ignored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// What a request held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<Event>,
    /// Samples without a finite value (stale markers, NaN, ±Inf): skipped.
    pub skipped: usize,
}

/// Largest decompressed request taken (Prometheus sends far less per shard).
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Decodes one remote-write body; the error says what is wrong with it.
pub fn decode(body: &[u8]) -> Result<Decoded, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("not snappy block data: {e}"))?;
    if len > MAX_DECODED_BYTES {
        return Err(format!("decompresses to {len} bytes, over the limit of {MAX_DECODED_BYTES}"));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("not snappy block data: {e}"))?;
    let request = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("not a remote-write WriteRequest: {e}"))?;
    let mut out = Decoded::default();
    for (i, series) in request.timeseries.into_iter().enumerate() {
        let mut labels: BTreeMap<String, String> =
            series.labels.into_iter().map(|l| (l.name, l.value)).filter(|(_, v)| !v.is_empty()).collect();
        let metric = labels.remove("__name__").ok_or_else(|| format!("timeseries[{i}] has no __name__ label"))?;
        let service = ["service", "app", "job"]
            .iter()
            .find_map(|k| labels.get(*k).cloned())
            .ok_or_else(|| format!("timeseries[{i}] ({metric}) has no service, app or job label"))?;
        for s in series.samples {
            if !s.value.is_finite() {
                out.skipped += 1;
                continue;
            }
            let event = Event::Metric(MetricSample {
                ts: s.timestamp,
                service: service.clone(),
                metric: metric.clone(),
                value: s.value,
                labels: labels.clone(),
            });
            // The same rules as an event posted to `/v1/events`.
            crate::event::check_millis(s.timestamp)
                .and_then(|()| event.validate())
                .map_err(|e| format!("timeseries[{i}] ({metric}): {e}"))?;
            out.events.push(event);
        }
    }
    Ok(out)
}

/// Encodes a request as Prometheus sends it (for tests and load generators).
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new().compress_vec(&raw).expect("snappy compresses any input")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T07:00:00Z.
    const T: i64 = 1_795_417_200_000;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
            samples: samples.iter().map(|(t, v)| Sample { timestamp: *t, value: *v }).collect(),
        }
    }

    #[test]
    fn a_write_request_becomes_metric_events() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "http_p99_ms"), ("job", "checkout"), ("instance", "10.0.0.1:9100"), ("env", "")],
                    &[(T, 120.5), (T + 1_000, stale)],
                ),
                series(&[("__name__", "up"), ("job", "node"), ("service", "payments")], &[(T, 1.0)]),
            ],
        };
        let d = decode(&encode(&request)).unwrap();
        assert_eq!(d.skipped, 1, "the stale marker");
        let Event::Metric(m) = &d.events[0] else { panic!("a metric") };
        assert_eq!((m.ts, m.service.as_str(), m.metric.as_str(), m.value), (T, "checkout", "http_p99_ms", 120.5));
        assert_eq!(m.labels.get("instance").map(String::as_str), Some("10.0.0.1:9100"));
        assert!(!m.labels.contains_key("env"), "an empty label is no label");
        let Event::Metric(m) = &d.events[1] else { panic!("a metric") };
        assert_eq!(m.service, "payments", "`service` before `job`");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(decode(b"\xff\xff\xff\xff\xff\xff").unwrap_err().contains("snappy"));
        let not_proto = snap::raw::Encoder::new().compress_vec(b"\xff\xff\xff").unwrap();
        assert!(decode(&not_proto).unwrap_err().contains("WriteRequest"));
        let nameless = WriteRequest { timeseries: vec![series(&[("job", "x")], &[(T, 1.0)])] };
        assert_eq!(decode(&encode(&nameless)).unwrap_err(), "timeseries[0] has no __name__ label");
        let orphan = WriteRequest { timeseries: vec![series(&[("__name__", "x")], &[(T, 1.0)])] };
        assert!(decode(&encode(&orphan)).unwrap_err().contains("no service, app or job"));
        let ancient = WriteRequest { timeseries: vec![series(&[("__name__", "x"), ("job", "j")], &[(1, 1.0)])] };
        assert!(decode(&encode(&ancient)).unwrap_err().contains("outside"), "the same time range as /v1/events");
        let long = "n".repeat(300);
        let named = WriteRequest { timeseries: vec![series(&[("__name__", &long), ("job", "j")], &[(T, 1.0)])] };
        assert!(decode(&encode(&named)).unwrap_err().contains("longer than 256"), "the same name rules");
    }
}
