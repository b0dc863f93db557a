//! Configuration the binary reads from the environment. Only the binary reads env.

use std::path::PathBuf;

/// Where the embedded SQLite database lives when `DATABASE_URL` is unset.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SENTINEL_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".sentinel"))
}

/// `DATABASE_URL` (sqlx's convention), or the embedded SQLite file under the data dir.
pub fn database_url() -> anyhow::Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => {
            let dir = data_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
            Ok(format!("sqlite://{}", dir.join("sentinel.db").display()))
        }
    }
}
