//! Runbooks as data: YAML files that say, for an anomaly type or alert name,
//! which actions to take in which order and under which conditions on the
//! evidence. Loaded and checked once at start-up; a malformed file is an error
//! naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executors::Action;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: PathBuf, line: usize, column: usize, message: String },
    #[error("{file}:{line}: {message}")]
    Invalid { file: PathBuf, line: usize, message: String },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    pub id: String,
    pub title: String,
    #[serde(rename = "match")]
    pub matches: Match,
    pub steps: Vec<Step>,
}

/// Which detections a runbook answers. Either list may be empty, not both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub anomaly_types: Vec<String>,
    #[serde(default)]
    pub alert_names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// Every condition must hold for the step to be planned; none means always.
    #[serde(default)]
    pub when: Vec<Condition>,
    pub action: ActionSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlastRadius {
    SingleInstance,
    SingleService,
    MultipleServices,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// `ec2`, `ecs`, `kubernetes` or `mock`.
    pub executor: String,
    pub action: String,
    /// A template: `{service}` and `{namespace}` are filled in when planning.
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    pub estimated_downtime_secs: u64,
    pub blast_radius: BlastRadius,
    /// How to undo the action; `restore_pre_state` restores what the executor captured.
    pub rollback: String,
}

/// `KEY OP VALUE` over the evidence, e.g. `minutes_since_deploy <= 30` or
/// `oom_killed == true`. A key the evidence lacks makes the condition false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    pub key: String,
    pub op: Op,
    pub value: Evidence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// One piece of evidence: a number, a flag or a word.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Evidence {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl TryFrom<String> for Condition {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [key, op, value] = parts.as_slice() else {
            return Err(format!("condition `{s}` is not `KEY OP VALUE`"));
        };
        let op = match *op {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => return Err(format!("condition `{s}`: unknown operator `{other}` (< <= > >= == !=)")),
        };
        let value = match *value {
            "true" => Evidence::Bool(true),
            "false" => Evidence::Bool(false),
            v => v.parse::<f64>().map(Evidence::Number).unwrap_or_else(|_| Evidence::Text(v.to_owned())),
        };
        if matches!(value, Evidence::Bool(_) | Evidence::Text(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!("condition `{s}`: only == and != compare flags and words"));
        }
        Ok(Condition { key: (*key).to_owned(), op, value })
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        let op = match c.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        let value = match c.value {
            Evidence::Bool(b) => b.to_string(),
            Evidence::Number(n) => n.to_string(),
            Evidence::Text(t) => t,
        };
        format!("{} {op} {value}", c.key)
    }
}

impl Condition {
    pub fn holds(&self, evidence: &BTreeMap<String, Evidence>) -> bool {
        let Some(actual) = evidence.get(&self.key) else {
            return false;
        };
        match (actual, &self.value) {
            (Evidence::Number(a), Evidence::Number(b)) => match self.op {
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                Op::Ge => a >= b,
                Op::Eq => a == b,
                Op::Ne => a != b,
            },
            (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => match self.op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => false,
            },
            _ => false,
        }
    }
}

/// An action planned from a runbook step for one incident: the executors'
/// [`Action`] (what to do, to what) and what the runbook claims about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub runbook: String,
    pub step: String,
    /// Executor kind, action name, target and parameters, as the executor takes them.
    #[serde(flatten)]
    pub action: Action,
    pub estimated_downtime: Duration,
    pub blast_radius: BlastRadius,
    pub rollback: String,
}

impl Runbook {
    pub fn answers(&self, anomaly_type: Option<&str>, alert_name: Option<&str>) -> bool {
        anomaly_type.is_some_and(|t| self.matches.anomaly_types.iter().any(|m| m == t))
            || alert_name.is_some_and(|n| self.matches.alert_names.iter().any(|m| m == n))
    }

    /// The steps whose conditions hold, in runbook order, with targets filled in.
    pub fn plan(&self, evidence: &BTreeMap<String, Evidence>, service: &str, namespace: &str) -> Vec<PlannedAction> {
        self.steps
            .iter()
            .filter(|s| s.when.iter().all(|c| c.holds(evidence)))
            .map(|s| PlannedAction {
                runbook: self.id.clone(),
                step: s.name.clone(),
                action: Action {
                    executor: s.action.executor.clone(),
                    action: s.action.action.clone(),
                    target: s.action.target.replace("{service}", service).replace("{namespace}", namespace),
                    params: s.action.params.clone(),
                },
                estimated_downtime: Duration::from_secs(s.action.estimated_downtime_secs),
                blast_radius: s.action.blast_radius,
                rollback: s.action.rollback.clone(),
            })
            .collect()
    }
}

/// Parses one runbook file's text and checks what serde cannot.
pub fn parse(file: &Path, text: &str) -> Result<Runbook, Error> {
    let runbook: Runbook = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        Error::Parse { file: file.to_owned(), line, column, message: e.to_string() }
    })?;
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map_or(1, |i| i + 1);
    let invalid =
        |needle: &str, message: String| Error::Invalid { file: file.to_owned(), line: line_of(needle), message };
    if runbook.matches.anomaly_types.is_empty() && runbook.matches.alert_names.is_empty() {
        return Err(invalid("match", "`match` needs anomaly_types or alert_names".into()));
    }
    if runbook.steps.is_empty() {
        return Err(invalid("steps", "a runbook needs at least one step".into()));
    }
    for step in &runbook.steps {
        if !executors::KINDS.contains(&step.action.executor.as_str()) {
            return Err(invalid(
                &format!("executor: {}", step.action.executor),
                format!(
                    "step `{}`: unknown executor `{}` ({})",
                    step.name,
                    step.action.executor,
                    executors::KINDS.join(", ")
                ),
            ));
        }
        if step.action.rollback.trim().is_empty() {
            return Err(invalid(&step.name, format!("step `{}`: rollback must say how to undo the action", step.name)));
        }
    }
    Ok(runbook)
}

/// Loads every `*.yaml`/`*.yml` file of `dir`, sorted by name; runbook ids must be unique.
pub fn load_dir(dir: &Path) -> Result<Vec<Runbook>, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        texts.push((file, text));
    }
    parse_all(texts.iter().map(|(f, t)| (f.as_path(), t.as_str())))
}

fn parse_all<'a>(files: impl Iterator<Item = (&'a Path, &'a str)>) -> Result<Vec<Runbook>, Error> {
    let mut runbooks: Vec<Runbook> = Vec::new();
    for (file, text) in files {
        let runbook = parse(file, text)?;
        if runbooks.iter().any(|r| r.id == runbook.id) {
            return Err(Error::Invalid {
                file: file.to_owned(),
                line: 1,
                message: format!("runbook id `{}` is used twice", runbook.id),
            });
        }
        runbooks.push(runbook);
    }
    Ok(runbooks)
}

/// The runbooks shipped with Sentinel (`nodes/runbooks/`), built into the binary.
pub const SHIPPED: [(&str, &str); NUM_SHIPPED] = [
    ("bad-deployment.yaml", include_str!("../runbooks/bad-deployment.yaml")),
    ("consumer-lag.yaml", include_str!("../runbooks/consumer-lag.yaml")),
    ("cpu-saturation.yaml", include_str!("../runbooks/cpu-saturation.yaml")),
    ("crash-loop-backoff.yaml", include_str!("../runbooks/crash-loop-backoff.yaml")),
    ("db-connection-exhaustion.yaml", include_str!("../runbooks/db-connection-exhaustion.yaml")),
    ("error-rate-spike.yaml", include_str!("../runbooks/error-rate-spike.yaml")),
    ("image-pull-backoff.yaml", include_str!("../runbooks/image-pull-backoff.yaml")),
    ("latency-spike.yaml", include_str!("../runbooks/latency-spike.yaml")),
    ("memory-leak.yaml", include_str!("../runbooks/memory-leak.yaml")),
    ("node-not-ready.yaml", include_str!("../runbooks/node-not-ready.yaml")),
];
const NUM_SHIPPED: usize = 10;

/// Parses the shipped runbooks.
pub fn shipped() -> Result<Vec<Runbook>, Error> {
    parse_all(SHIPPED.iter().map(|(name, text)| (Path::new(*name), *text)))
}

/// Where the shipped runbooks live in the source tree.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks")
}

#[cfg(test)]
#[path = "runbook/tests.rs"]
mod tests;
