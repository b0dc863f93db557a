use crate::run::{RunId, RunStatus};

/// Errors returned by the engine's API. Errors a node raises while running are
/// [`crate::NodeError`]s; they end up on the run, not here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid graph `{graph}`: {reason}")]
    InvalidGraph { graph: String, reason: String },
    #[error("graph `{name}` version {version} is not registered")]
    UnknownGraph { name: String, version: i32 },
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error("run {run} is {status} and takes no more signals")]
    RunFinished { run: RunId, status: RunStatus },
    #[error("run {run} is {status}, expected {expected}")]
    WrongStatus { run: RunId, status: RunStatus, expected: &'static str },
    #[error("run {run}: lease lost (another worker took the run over)")]
    LeaseLost { run: RunId },
    #[error("cannot encode or decode state: {0}")]
    State(#[from] serde_json::Error),
    #[error("invalid database url `{0}`")]
    DatabaseUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("run {0} exists already")]
    RunExists(RunId),
    #[error("graph `{graph}`: an unfinished run already holds correlation key `{key}`")]
    KeyTaken { graph: String, key: String },
    #[error("graph `{graph}`: correlation key `{key}` kept changing hands; try again")]
    KeyContended { graph: String, key: String },
    #[error("corrupt row in `{table}`: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl Error {
    /// True when the error comes from the database connection rather than from
    /// the request: the caller may retry the same call later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || matches!(e, sqlx::Error::Database(db) if is_transient_code(db.code().as_deref()))
            }
            Error::KeyContended { .. } => true,
            _ => false,
        }
    }
}

/// SQLSTATE classes that mean "try again": connection exceptions (08),
/// serialization failures/deadlocks (40), insufficient resources (53),
/// operator intervention such as admin shutdown (57), and SQLite's BUSY (5)/LOCKED (6).
fn is_transient_code(code: Option<&str>) -> bool {
    match code {
        Some(c) => ["08", "40", "53", "57"].iter().any(|p| c.starts_with(p)) || c == "5" || c == "6",
        None => false,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
