//! The operator's verbs over the REST API: `sentinel runs …`, `sentinel keys
//! …`, `sentinel killswitch …`. Tables for people, `--json` for scripts; every
//! refusal the API gives is printed as the API worded it.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use api::access::{ApiKey, KillSwitch, NewKey, Role};
use api::server::{KeyList, RunDetailBody, RunList, SignalAccepted};

/// Where the API is and how to call it.
#[derive(Args, Clone, Debug)]
pub struct Remote {
    /// Base URL of `sentinel serve`.
    #[arg(long, env = "SENTINEL_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// API key (`snl_…`).
    #[arg(long, env = "SENTINEL_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        graph: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One run with its history.
    Show { id: String },
    /// Approve the action a run waits on: prints the proposal and the gate it decides.
    Approve(Decision),
    /// Reject the action a run waits on: prints the proposal and the gate it decides.
    Reject(Decision),
    /// Cancel a run.
    Cancel(Decision),
    /// Retry a failed run.
    Retry { id: String },
}

#[derive(Args, Debug)]
pub struct Decision {
    pub id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who you act for, kept as a note; the decision is recorded as the key's.
    #[arg(long)]
    pub actor: Option<String>,
    /// The gate to decide (`runs show` prints it); the run's current one when absent.
    #[arg(long)]
    pub gate: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Write to the database (DATABASE_URL or the embedded file) instead of
        /// calling the API: how the first admin key is made.
        #[arg(long)]
        direct: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
    /// List keys (never their secrets).
    List,
}

#[derive(Subcommand, Debug)]
pub enum KillSwitchCommand {
    /// Stop every auto-approval.
    On,
    /// Let the policy auto-approve again.
    Off,
    /// Show the switch.
    Status,
}

pub struct Client {
    remote: Remote,
    http: reqwest::Client,
}

impl Client {
    pub fn new(remote: Remote) -> Client {
        Client { remote, http: reqwest::Client::new() }
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<T> {
        let Some(key) = self.remote.api_key.as_deref() else {
            bail!("no API key: set SENTINEL_API_KEY or pass --api-key");
        };
        let url = format!("{}{path}", self.remote.url.trim_end_matches('/'));
        let mut req = self.http.request(method.clone(), &url).bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("reading the answer to {method} {url}"))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{method} {path}: {status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: unexpected answer: {text}"))
    }

    fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<bool> {
        if self.remote.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(self.remote.json)
    }

    pub async fn runs(&self, command: RunsCommand) -> anyhow::Result<()> {
        match command {
            RunsCommand::List { status, graph, limit } => {
                let mut query = vec![format!("limit={limit}")];
                query.extend(status.map(|s| format!("status={s}")));
                query.extend(graph.map(|g| format!("graph={g}")));
                let list: RunList = self.call(Method::GET, &format!("/v1/runs?{}", query.join("&")), None).await?;
                if !self.print_json(&list)? {
                    let mut table = table(&["id", "graph", "status", "node", "step", "waiting for", "updated"]);
                    for r in &list.runs {
                        table.add_row(vec![
                            r.id.clone(),
                            format!("{} v{}", r.graph, r.graph_version),
                            r.status.clone(),
                            r.node.clone(),
                            r.step.to_string(),
                            r.waiting_for.join(", "),
                            time(r.updated_at),
                        ]);
                    }
                    println!("{table}");
                    self.warn_undeliverable().await;
                }
            }
            RunsCommand::Show { id } => {
                let detail: RunDetailBody = self.call(Method::GET, &format!("/v1/runs/{id}"), None).await?;
                if !self.print_json(&detail)? {
                    let r = &detail.run;
                    println!(
                        "run      {}\ngraph    {} v{}\nstatus   {} at `{}` (step {}, attempt {})",
                        r.id, r.graph, r.graph_version, r.status, r.node, r.step, r.attempt
                    );
                    if !r.waiting_for.is_empty() {
                        println!("waiting  for {}", r.waiting_for.join(", "));
                    }
                    if let Some(e) = &r.error {
                        println!("error    {e}");
                    }
                    if let Some(p) = &detail.proposal {
                        print_proposal(p);
                    }
                    let mut table = table(&["step", "node", "attempt", "outcome", "worker", "finished"]);
                    for h in &detail.history {
                        let outcome = h
                            .outcome
                            .get("kind")
                            .and_then(Value::as_str)
                            .map_or_else(|| h.outcome.to_string(), str::to_owned);
                        table.add_row(vec![
                            h.step.to_string(),
                            h.node.clone(),
                            h.attempt.to_string(),
                            outcome,
                            h.worker.clone(),
                            time(h.finished_at),
                        ]);
                    }
                    println!("{table}");
                }
            }
            RunsCommand::Approve(d) => self.decide("approve", d).await?,
            RunsCommand::Reject(d) => self.decide("reject", d).await?,
            RunsCommand::Cancel(d) => self.decide("cancel", d).await?,
            RunsCommand::Retry { id } => {
                let v: Value = self.call(Method::POST, &format!("/v1/runs/{id}/retry"), None).await?;
                if !self.print_json(&v)? {
                    println!("run {id} is runnable again");
                }
            }
        }
        Ok(())
    }

    /// Says on standard error when notifications reached nobody.
    async fn warn_undeliverable(&self) {
        let list: anyhow::Result<Value> =
            self.call(Method::GET, "/v1/outbox?status=undeliverable&limit=1000", None).await;
        if let Some(n) = list.ok().and_then(|v| v["messages"].as_array().map(Vec::len)).filter(|n| *n > 0) {
            eprintln!(
                "warning: {n} notification(s) reached nobody (no Slack or PagerDuty destination took them): \
                 GET /v1/outbox?status=undeliverable"
            );
        }
    }

    async fn decide(&self, verb: &str, d: Decision) -> anyhow::Result<()> {
        let mut body = json!({ "reason": d.reason });
        if let Some(actor) = d.actor {
            body["actor"] = json!(actor);
        }
        if verb != "cancel" {
            // Show what is decided, and bind the decision to that proposal's gate.
            let detail: RunDetailBody = self.call(Method::GET, &format!("/v1/runs/{}", d.id), None).await?;
            let gate = match (d.gate, &detail.proposal) {
                (Some(g), _) => g,
                (None, Some(p)) if p.waiting => p.gate.clone(),
                (None, _) => anyhow::bail!(
                    "run {} is not waiting for a decision (it is {} at `{}`)",
                    d.id,
                    detail.run.status,
                    detail.run.node
                ),
            };
            if !self.remote.json {
                if let Some(p) = &detail.proposal {
                    print_proposal(p);
                }
                println!("{verb} gate {gate}");
            }
            body["gate"] = json!(gate);
        }
        let done: SignalAccepted = self.call(Method::POST, &format!("/v1/runs/{}/{verb}", d.id), Some(body)).await?;
        if !self.print_json(&done)? {
            let delivery = serde_json::to_value(done.delivery)?;
            println!("{verb} of run {}: {} (signal {})", done.run, delivery.as_str().unwrap_or("?"), done.signal);
        }
        Ok(())
    }

    pub async fn keys(&self, command: KeysCommand) -> anyhow::Result<()> {
        match command {
            KeysCommand::Create { name, role, direct: false } => {
                let key: NewKey =
                    self.call(Method::POST, "/v1/keys", Some(json!({ "name": name, "role": role }))).await?;
                self.print_new_key(&key)?;
            }
            KeysCommand::Create { direct: true, .. } => bail!("--direct is handled before the API is called"),
            KeysCommand::Revoke { id } => {
                let key: ApiKey = self.call(Method::DELETE, &format!("/v1/keys/{id}"), None).await?;
                if !self.print_json(&key)? {
                    println!("revoked {} ({}, {})", key.id, key.name, key.role);
                }
            }
            KeysCommand::List => {
                let list: KeyList = self.call(Method::GET, "/v1/keys", None).await?;
                if !self.print_json(&list)? {
                    let mut table = table(&["id", "name", "role", "prefix", "created", "by", "revoked"]);
                    for k in &list.keys {
                        table.add_row(vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.role.to_string(),
                            format!("{}…", k.prefix),
                            time(k.created_at),
                            k.created_by.clone(),
                            k.revoked_at.map_or_else(String::new, time),
                        ]);
                    }
                    println!("{table}");
                }
            }
        }
        Ok(())
    }

    pub fn print_new_key(&self, key: &NewKey) -> anyhow::Result<()> {
        if !self.print_json(key)? {
            println!("created {} ({}, {})", key.key.id, key.key.name, key.key.role);
            println!("secret: {}", key.secret);
            println!("store it now: it is not shown again and only its hash is kept");
        }
        Ok(())
    }

    pub async fn kill_switch(&self, command: KillSwitchCommand) -> anyhow::Result<()> {
        let switch: KillSwitch = match command {
            KillSwitchCommand::On => self.call(Method::PUT, "/v1/killswitch", Some(json!({ "enabled": true }))).await?,
            KillSwitchCommand::Off => {
                self.call(Method::PUT, "/v1/killswitch", Some(json!({ "enabled": false }))).await?
            }
            KillSwitchCommand::Status => self.call(Method::GET, "/v1/killswitch", None).await?,
        };
        if !self.print_json(&switch)? {
            let state = if switch.enabled { "ON: nothing is auto-approved" } else { "off" };
            match (&switch.updated_by, switch.updated_at) {
                (Some(by), Some(at)) => println!("kill switch {state} (set by {by} at {})", time(at)),
                _ => println!("kill switch {state}"),
            }
        }
        Ok(())
    }
}

fn print_proposal(p: &api::server::Proposal) {
    println!("proposal gate {}{}", p.gate, if p.waiting { " (waiting for a decision)" } else { "" });
    println!("  service     {} ({})", p.service, p.severity.as_deref().unwrap_or("severity unknown"));
    println!("  hypothesis  {}", p.top_hypothesis.as_deref().unwrap_or("none"));
    println!("  action      {} {} on {}", p.executor, p.action, p.target);
    println!("  parameters  {}", p.params);
    println!(
        "  downtime    ~{} s; blast radius {}; rollback: {}",
        p.estimated_downtime_secs, p.blast_radius, p.rollback
    );
    if let Some(deadline) = p.deadline {
        println!("  decide by   {}", time(deadline));
    }
    if let Some(d) = &p.decided {
        println!("  decided     {d}");
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
