//! Detector state checkpointed in the engine's database (the API's
//! `detector_state` table), shared by every replica: whichever replica is
//! assigned a series' partition restores its baselines from here.

use async_trait::async_trait;
use engine::Store;
use sqlx::Row;
use telemetry::detect::Series;
use telemetry::pipeline::DetectorStates;

/// One row per (service, metric) series.
pub struct SqlDetectorStates {
    store: Store,
}

impl SqlDetectorStates {
    /// The table comes with the API's migrations ([`crate::access::Access::new`]).
    pub fn new(store: Store) -> Self {
        SqlDetectorStates { store }
    }
}

/// The row key: service and metric joined by a unit separator, which neither contains.
fn series_key(service: &str, metric: &str) -> String {
    format!("{service}\u{1f}{metric}")
}

const CHUNK: usize = 200;

#[async_trait]
impl DetectorStates for SqlDetectorStates {
    async fn load(&self, keys: &[(String, String)]) -> Result<Vec<((String, String), Series)>, String> {
        let mut found = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT series, state FROM detector_state WHERE series IN ({})", marks.join(", "));
            let mut query = sqlx::query(&sql);
            for (service, metric) in chunk {
                query = query.bind(series_key(service, metric));
            }
            let rows = query.fetch_all(self.store.pool()).await.map_err(|e| e.to_string())?;
            for row in rows {
                let key: String = row.try_get(0).map_err(|e| e.to_string())?;
                let state: String = row.try_get(1).map_err(|e| e.to_string())?;
                let Some((service, metric)) = key.split_once('\u{1f}') else { continue };
                match serde_json::from_str::<Series>(&state) {
                    Ok(series) => found.push(((service.to_owned(), metric.to_owned()), series)),
                    // An older or damaged checkpoint: that series starts afresh.
                    Err(e) => tracing::warn!(%service, %metric, error = %e, "detector checkpoint does not decode"),
                }
            }
        }
        Ok(found)
    }

    async fn save(&self, states: &[((String, String), Series)]) -> Result<(), String> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut tx = self.store.pool().begin().await.map_err(|e| e.to_string())?;
        for ((service, metric), series) in states {
            let state = serde_json::to_string(series).map_err(|e| e.to_string())?;
            // Never move a series back in time: a replica with an older view loses.
            sqlx::query(
                "INSERT INTO detector_state (series, state, last_ts, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (series) DO UPDATE SET state = $2, last_ts = $3, updated_at = $4
                 WHERE detector_state.last_ts <= $3",
            )
            .bind(series_key(service, metric))
            .bind(state)
            .bind(series.last_ts().unwrap_or(i64::MIN))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())
    }
}
