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

/// Slack interactivity, when `SLACK_SIGNING_SECRET` is set. Approvers come from
/// `SENTINEL_SLACK_APPROVERS`: Slack user ids separated by commas, allowed for
/// every incident.
pub fn slack(engine: engine::Engine) -> anyhow::Result<Option<crate::slack::SlackState>> {
    let Some(secret) = std::env::var("SLACK_SIGNING_SECRET").ok().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let anyone: Vec<String> = std::env::var("SENTINEL_SLACK_APPROVERS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if anyone.is_empty() {
        anyhow::bail!(
            "SLACK_SIGNING_SECRET is set but SENTINEL_SLACK_APPROVERS is empty: nobody could approve in Slack"
        );
    }
    Ok(Some(crate::slack::SlackState {
        engine,
        signing_secret: secret,
        approvers: crate::slack::Approvers { anyone, ..Default::default() },
    }))
}
