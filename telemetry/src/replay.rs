//! `sentinel detect`: the detectors over a CSV time series, scoring every
//! point, so detection quality can be measured on labelled benchmarks (the
//! Numenta Anomaly Benchmark's `timestamp,value` files read as they are).
//!
//! Input: a header naming `timestamp` and `value` (other columns are
//! ignored); timestamps as RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), or Unix
//! seconds or milliseconds; any interval, regular or not. Output:
//! `timestamp,value,anomaly_score`, the timestamp written as it was read, the
//! score the one [`crate::detect::Series::observe`] reports, in [0, 1]: the
//! persistence rule's own, 0.5 or more exactly when the rule holds.

use std::io::{Read, Write};

use crate::detect::{DetectorConfig, Series};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("{0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the header must name `timestamp` and `value` columns, not {0:?}")]
    Header(Vec<String>),
}

/// What a replay saw.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub points: u64,
    /// Points whose score is at least 0.5.
    pub above_half: u64,
    /// Anomalies the persistence rule raised.
    pub anomalies: u64,
    /// Points at or before an earlier timestamp: scored 0, learnt from nothing.
    pub out_of_order: u64,
}

/// Milliseconds since the epoch from the forms a benchmark file uses.
pub fn parse_timestamp(t: &str) -> Result<i64, String> {
    let t = t.trim();
    if let Ok(n) = t.parse::<f64>() {
        if !n.is_finite() || n.abs() > 1e17 {
            return Err(format!("timestamp {t:?} is not seconds or milliseconds since 1970"));
        }
        // Seconds until the year 5138; milliseconds beyond.
        let ms = if n.abs() < 1e11 { n * 1000.0 } else { n };
        return Ok(ms.round() as i64);
    }
    crate::event::rfc3339_millis(t).map_err(|e| format!("timestamp {e}"))
}

/// One row of a series file, as read.
pub struct Row<'a> {
    pub raw_ts: &'a str,
    pub ts: i64,
    pub raw_value: &'a str,
    pub value: f64,
}

/// Reads a `timestamp,value` file row by row, handing each to `f`; the first
/// bad row is refused with its line number.
pub fn for_each_row(
    input: impl Read,
    mut f: impl FnMut(Row<'_>) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input);
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.to_ascii_lowercase()).collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(ts_col), Some(value_col)) = (column("timestamp"), column("value")) else {
        return Err(ReplayError::Header(header));
    };
    for record in reader.records() {
        let record = record?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).ok_or_else(|| ReplayError::Line { line, reason: "missing column".into() });
        let raw_ts = field(ts_col)?;
        let ts = parse_timestamp(raw_ts).map_err(|reason| ReplayError::Line { line, reason })?;
        let raw_value = field(value_col)?;
        let value: f64 = raw_value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| ReplayError::Line { line, reason: format!("value {raw_value:?} is not a finite number") })?;
        f(Row { raw_ts, ts, raw_value, value })?;
    }
    Ok(())
}

/// Scores every row of `input` and writes `timestamp,value,anomaly_score` to `output`.
pub fn replay(input: impl Read, output: impl Write, config: &DetectorConfig) -> Result<Summary, ReplayError> {
    let mut writer = csv::Writer::from_writer(output);
    writer.write_record(["timestamp", "value", "anomaly_score"])?;
    let mut series = Series::new();
    let mut summary = Summary::default();
    for_each_row(input, |row| {
        summary.points += 1;
        let score = match series.observe(config, row.ts, row.value) {
            Some((point, anomaly)) => {
                summary.above_half += u64::from(point.score >= 0.5);
                summary.anomalies += u64::from(anomaly.is_some());
                point.score
            }
            None => {
                summary.out_of_order += 1;
                0.0
            }
        };
        writer.write_record([row.raw_ts, row.raw_value, &format!("{score:.6}")])?;
        Ok(())
    })?;
    writer.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_nab_style_file() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..200 {
            let v = if (150..160).contains(&i) { 90.0 } else { 10.0 + (i % 3) as f64 };
            csv.push_str(&format!("2014-04-01 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
        }
        let mut out = Vec::new();
        let summary = replay(csv.as_bytes(), &mut out, &DetectorConfig::default()).unwrap();
        assert_eq!(summary.points, 200);
        assert_eq!(summary.anomalies, 1);
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "timestamp,value,anomaly_score");
        assert_eq!(rows.len(), 201);
        assert!(rows[1].starts_with("2014-04-01 00:00:00,10,"), "{}", rows[1]);
        let score = |row: &str| row.rsplit(',').next().unwrap().parse::<f64>().unwrap();
        assert_eq!(score(rows[1]), 0.0, "no score before the warm-up");
        assert!(score(rows[151]) < 0.5, "the first high point alone: {}", rows[151]);
        assert!(score(rows[153]) >= 0.5, "the third, as the persistence rule says: {}", rows[153]);
        assert!(rows[1..].iter().all(|r| (0.0..=1.0).contains(&score(r))));
    }

    #[test]
    fn bad_input_names_the_line() {
        let err = replay("time,v\n1,2\n".as_bytes(), Vec::new(), &DetectorConfig::default()).unwrap_err();
        assert!(matches!(err, ReplayError::Header(_)), "{err}");
        let err =
            replay("timestamp,value\n1,2\n2,abc\n".as_bytes(), Vec::new(), &DetectorConfig::default()).unwrap_err();
        assert_eq!(err.to_string(), "line 3: value \"abc\" is not a finite number");
        let err =
            replay("timestamp,value\nyesterday,2\n".as_bytes(), Vec::new(), &DetectorConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("line 2: timestamp"), "{err}");
        for bad in ["NaN", "inf", "-infinity", "1e300"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_timestamp("1396310400").unwrap(), 1_396_310_400_000);
        assert_eq!(parse_timestamp("1396310400000").unwrap(), 1_396_310_400_000);
        assert_eq!(parse_timestamp("2014-04-01T00:00:00Z").unwrap(), 1_396_310_400_000);
    }
}
