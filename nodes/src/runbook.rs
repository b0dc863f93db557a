//! Runbooks as data: YAML files that say, for an anomaly type or an alert
//! (its name and Alertmanager label matchers), which actions to take in which
//! order and under which conditions on the evidence. Loaded and checked once at
//! start-up; a malformed file is an error naming the file, line and column.
//!
//! A step's target is a template filled from the service catalogue
//! ([`crate::catalog`]), never from the detection's labels.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executors::Action;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Catalog};
use crate::incident::{Detection, Source};
use crate::yaml;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Yaml(#[from] yaml::Error),
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

/// Which detections a runbook answers: any of the anomaly types, an alert
/// matching any of `alerts`, or any detection whose evidence satisfies every
/// one of `facts` (e.g. `oom_killed == true`, as the cluster states it). At
/// least one of the three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub anomaly_types: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<AlertMatch>,
    #[serde(default)]
    pub facts: Vec<Condition>,
}

/// An alert by name, and optionally by its labels: `KubePodCrashLooping`, or
/// `{ name: HighLatency, matchers: ['service=~"checkout|cart"', 'severity!="info"'] }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
}

impl<'de> Deserialize<'de> for AlertMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            matchers: Vec<Matcher>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AlertMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an alert name, or `{ name, matchers }`")
            }
            fn visit_str<E>(self, name: &str) -> Result<AlertMatch, E> {
                Ok(AlertMatch { name: name.to_owned(), matchers: Vec::new() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AlertMatch, A::Error> {
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(AlertMatch { name: full.name, matchers: full.matchers })
            }
        }
        d.deserialize_any(V)
    }
}

/// One Alertmanager label matcher: `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX`
/// or `NAME!~REGEX`, the value optionally double-quoted. As in Alertmanager, a
/// regex must match the whole value, and a missing label is the empty string.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<regex::Regex>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        (&self.label, self.op, &self.value) == (&other.label, other.op, &other.value)
    }
}

impl TryFrom<String> for Matcher {
    type Error = String;
    fn try_from(text: String) -> Result<Matcher, String> {
        let s = text.trim();
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let (label, rest) = s.split_at(end);
        if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("matcher `{text}` does not start with a label name"));
        }
        let rest = rest.trim_start();
        let (op, value) =
            [("=~", MatchOp::Regex), ("!~", MatchOp::NotRegex), ("!=", MatchOp::NotEqual), ("=", MatchOp::Equal)]
                .iter()
                .find_map(|(token, op)| rest.strip_prefix(token).map(|v| (*op, v.trim())))
                .ok_or_else(|| format!("matcher `{text}`: expected =, !=, =~ or !~ after `{label}`"))?;
        if value.starts_with(['=', '~']) {
            return Err(format!(
                "matcher `{text}`: the operator is one of =, !=, =~, !~ (quote a value that starts with `{}`)",
                &value[..1]
            ));
        }
        let value = unquote(value).map_err(|e| format!("matcher `{text}`: {e}"))?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher `{text}`: not a regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher { label: label.to_owned(), op, value, regex })
    }
}

/// A matcher value: bare, or double-quoted with `\"`, `\\` and `\n` escapes.
fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().trim().is_empty() => return Ok(out),
            '"' => return Err("text after the closing quote".into()),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(e @ ('"' | '\\')) => out.push(e),
                other => return Err(format!("unknown escape `\\{}`", other.unwrap_or(' '))),
            },
            c => out.push(c),
        }
    }
    Err("the closing quote is missing".into())
}

impl From<Matcher> for String {
    fn from(m: Matcher) -> String {
        let op = match m.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        format!("{}{op}{:?}", m.label, m.value)
    }
}

impl Matcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.label).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(actual),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(actual),
            _ => false,
        }
    }
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
    /// A template filled from the service catalogue when planning, e.g.
    /// `kubernetes:{namespace}/{deployment}` (placeholders: [`Catalog::target`]).
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

/// What a runbook plans for one incident: the actions, and the steps whose
/// conditions held but whose target the catalogue could not give (with why).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<PlannedAction>,
    pub untargeted: Vec<String>,
}

impl Runbook {
    /// How specifically this runbook answers `d` with `evidence`: `None`
    /// when it does not; an anomaly type listed is 0, an alert matched by name
    /// 1 plus one per label matcher, facts that hold 10 plus one per fact
    /// (what the cluster says beats what an alert is called).
    pub fn fit(&self, d: &Detection, evidence: &BTreeMap<String, Evidence>) -> Option<usize> {
        let f = &self.matches.facts;
        if !f.is_empty() && f.iter().all(|c| c.holds(evidence)) {
            return Some(10 + f.len());
        }
        let by_alert = match &d.source {
            Source::Alertmanager { alertname, .. } => self
                .matches
                .alerts
                .iter()
                .filter(|a| a.name == *alertname && a.matchers.iter().all(|m| m.matches(&d.labels)))
                .map(|a| 1 + a.matchers.len())
                .max(),
            Source::Detector { .. } => None,
        };
        by_alert.or_else(|| self.matches.anomaly_types.contains(&d.anomaly_type).then_some(0))
    }

    /// The steps whose conditions hold, in runbook order, with targets from the catalogue.
    pub fn plan(&self, evidence: &BTreeMap<String, Evidence>, d: &Detection, catalog: &Catalog) -> Plan {
        let mut plan = Plan::default();
        for s in self.steps.iter().filter(|s| s.when.iter().all(|c| c.holds(evidence))) {
            match catalog.target(&s.action.target, d) {
                Ok(target) => plan.actions.push(PlannedAction {
                    runbook: self.id.clone(),
                    step: s.name.clone(),
                    action: Action {
                        executor: s.action.executor.clone(),
                        action: s.action.action.clone(),
                        target,
                        params: {
                            let mut params = s.action.params.clone();
                            if let Some(tags) =
                                catalog.ec2_tags(&d.service).filter(|_| s.action.target.contains("{instance}"))
                            {
                                params.insert(crate::catalog::REQUIRE_TAGS.to_owned(), serde_json::json!(tags));
                            }
                            params
                        },
                    },
                    estimated_downtime: Duration::from_secs(s.action.estimated_downtime_secs),
                    blast_radius: s.action.blast_radius,
                    rollback: s.action.rollback.clone(),
                }),
                Err(why) => plan.untargeted.push(format!("step `{}`: {why}", s.name)),
            }
        }
        plan
    }
}

/// Parses one runbook file's text and checks what serde cannot.
pub fn parse(file: &Path, text: &str) -> Result<Runbook, Error> {
    let runbook: Runbook = yaml::from_str(file, text)?;
    let invalid = |path: &str, message: String| Error::Yaml(yaml::error_at(file, text, path, message));
    if runbook.id.trim().is_empty() {
        return Err(invalid("id", "a runbook needs an id".into()));
    }
    let m = &runbook.matches;
    if m.anomaly_types.is_empty() && m.alerts.is_empty() && m.facts.is_empty() {
        return Err(invalid("match", "`match` needs anomaly_types, alerts or facts".into()));
    }
    if runbook.steps.is_empty() {
        return Err(invalid("steps", "a runbook needs at least one step".into()));
    }
    for (i, step) in runbook.steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].action.{field}");
        let a = &step.action;
        if !executors::KINDS.contains(&a.executor.as_str()) {
            return Err(invalid(
                &at("executor"),
                format!("step `{}`: unknown executor `{}` ({})", step.name, a.executor, executors::KINDS.join(", ")),
            ));
        }
        if a.rollback.trim().is_empty() {
            return Err(invalid(
                &at("rollback"),
                format!("step `{}`: rollback must say how to undo the action", step.name),
            ));
        }
        if let Err(why) = check_target(&a.target, &a.executor) {
            return Err(invalid(&at("target"), format!("step `{}`: {why}", step.name)));
        }
    }
    Ok(runbook)
}

/// A target template is `EXECUTOR:SCOPE/NAME` whose placeholders the catalogue knows.
fn check_target(template: &str, executor: &str) -> Result<(), String> {
    if executor != "mock" && !template.starts_with(&format!("{executor}:")) {
        return Err(format!("target `{template}` does not start with `{executor}:`"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| format!("target `{template}`: unclosed `{{`"))? + open;
        let name = &rest[open + 1..close];
        if !catalog::PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "target `{template}`: unknown placeholder `{{{name}}}` (one of {})",
                catalog::PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &rest[close + 1..];
    }
    Ok(())
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

/// The runbooks a workflow plans from: a team's own (from its directories)
/// and the shipped ones.
#[derive(Clone, Debug, Default)]
pub struct Runbooks {
    team: Vec<Runbook>,
    shipped: Vec<Runbook>,
}

impl Runbooks {
    /// The shipped runbooks alone.
    pub fn shipped() -> Result<Runbooks, Error> {
        Ok(Runbooks { team: Vec::new(), shipped: shipped()? })
    }

    /// A team's runbooks from `dirs`, then the shipped ones; a team runbook
    /// with a shipped runbook's id replaces it.
    pub fn load(dirs: &[PathBuf]) -> Result<Runbooks, Error> {
        let mut team: Vec<Runbook> = Vec::new();
        for dir in dirs {
            for r in load_dir(dir)? {
                if team.iter().any(|x| x.id == r.id) {
                    return Err(Error::Yaml(yaml::Error {
                        file: dir.clone(),
                        line: 1,
                        column: 1,
                        message: format!("runbook id `{}` is used in two directories", r.id),
                    }));
                }
                team.push(r);
            }
        }
        let shipped = shipped()?.into_iter().filter(|r| !team.iter().any(|x| x.id == r.id)).collect();
        Ok(Runbooks { team, shipped })
    }

    /// The runbook for `d` with `evidence`: a team runbook that answers it
    /// before any shipped one; among either, the most specific match, then the first.
    pub fn choose(&self, d: &Detection, evidence: &BTreeMap<String, Evidence>) -> Option<&Runbook> {
        let best = |list: &'_ [Runbook]| -> Option<usize> {
            let mut best: Option<(usize, usize)> = None;
            for (i, r) in list.iter().enumerate() {
                if let Some(fit) = r.fit(d, evidence) {
                    if best.is_none_or(|(_, b)| fit > b) {
                        best = Some((i, fit));
                    }
                }
            }
            best.map(|(i, _)| i)
        };
        best(&self.team).map(|i| &self.team[i]).or_else(|| best(&self.shipped).map(|i| &self.shipped[i]))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Runbook> {
        self.team.iter().chain(&self.shipped)
    }

    /// How many came from a team's directories.
    pub fn team_count(&self) -> usize {
        self.team.len()
    }
}

fn parse_all<'a>(files: impl Iterator<Item = (&'a Path, &'a str)>) -> Result<Vec<Runbook>, Error> {
    let mut runbooks: Vec<Runbook> = Vec::new();
    for (file, text) in files {
        let runbook = parse(file, text)?;
        if runbooks.iter().any(|r| r.id == runbook.id) {
            return Err(Error::Yaml(yaml::error_at(
                file,
                text,
                "id",
                format!("runbook id `{}` is used twice", runbook.id),
            )));
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
    ("hpa-maxed-out.yaml", include_str!("../runbooks/hpa-maxed-out.yaml")),
    ("image-pull-backoff.yaml", include_str!("../runbooks/image-pull-backoff.yaml")),
    ("latency-spike.yaml", include_str!("../runbooks/latency-spike.yaml")),
    ("memory-leak.yaml", include_str!("../runbooks/memory-leak.yaml")),
    ("node-not-ready.yaml", include_str!("../runbooks/node-not-ready.yaml")),
    ("pod-not-ready.yaml", include_str!("../runbooks/pod-not-ready.yaml")),
    ("target-down.yaml", include_str!("../runbooks/target-down.yaml")),
    ("volume-filling-up.yaml", include_str!("../runbooks/volume-filling-up.yaml")),
];
const NUM_SHIPPED: usize = 14;

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
