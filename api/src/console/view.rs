//! The console's HTML. Everything a page shows comes through maud, which
//! escapes it; the only markup passed through unescaped is the console's own
//! SVG and the postmortem's Markdown, rendered with raw HTML turned to text.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{OutboxEntry, Run, RunDetail, RunId, RunStatus, Shape, StepOutcome, Timestamp};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use nodes::policy::{Breaker, PolicyConfig};
use nodes::workflow::Incident;
use serde_json::Value;

use super::FeedFilter;
use crate::access::{KillSwitch, Role, Session};
use crate::server::Proposal;

// ---- formatting -------------------------------------------------------------------

/// `2026-12-07 03:04:05Z`: UTC, to the second.
fn clock(ms: i64) -> String {
    let (date, time) = utc(ms);
    format!("{date} {time}Z")
}

/// `2026-12-07T03:04:05.123Z` → (`2026-12-07`, `03:04:05`).
pub(super) fn utc(ms: i64) -> (String, String) {
    let text = nodes::postmortem::rfc3339(Timestamp(ms));
    let (date, rest) = text.split_once('T').unwrap_or((&text, ""));
    (date.to_owned(), rest.get(..8).unwrap_or(rest).to_owned())
}

fn time(ms: i64) -> Markup {
    let full = nodes::postmortem::rfc3339(Timestamp(ms));
    html! { time datetime=(full) title=(full) { (clock(ms)) } }
}

/// A duration the way on-call reads it: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub(crate) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn json_text(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn words(s: &str) -> String {
    s.replace('_', " ")
}

/// Severity as text and a marker class; the text is always there, so colour
/// is never the only signal.
fn severity(s: Option<&str>) -> Markup {
    match s {
        Some(s) => html! { span class={ "sev sev-" (s) } { (s.to_uppercase()) } },
        None => html! { span class="sev" { "—" } },
    }
}

// ---- the frame ----------------------------------------------------------------

fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Sentinel" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/console" { "Sentinel" }
                    @if let Some(s) = session {
                        nav aria-label="Console" {
                            a href="/console" { "Incidents" }
                            a href="/console/operations" { "Operations" }
                        }
                        div class="who" {
                            span { "Signed in as " strong { (s.name) } " (" (s.role) ")" }
                            span id="live-state" class="live-state" role="status" aria-live="polite" {}
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

pub(crate) fn error_page(status: StatusCode, message: &str, session: Option<&Session>) -> Response {
    let body = html! {
        h1 { (status.canonical_reason().unwrap_or("Error")) }
        p class="notice error" role="alert" { (message) }
        @if session.is_some() {
            p { a href="/console" { "Back to the incidents" } }
        } @else {
            p { a href="/console/login" { "Sign in" } }
        }
    };
    (status, page(status.canonical_reason().unwrap_or("Error"), session, body)).into_response()
}

pub(crate) fn login(next: &str, note: Option<&str>, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(n) = note { p class="notice" role="status" { (n) } }
        @if let Some(e) = error { p class="notice error" role="alert" { (e) } }
        form class="login" method="post" action="/console/login" {
            input type="hidden" name="next" value=(next);
            label for="key" { "API key" }
            input id="key" name="key" type="password" autocomplete="off" required autofocus placeholder="snl_…";
            button type="submit" { "Sign in" }
        }
        p class="hint" {
            "Sign in with an API key (`sentinel keys create`). Viewers see everything and decide nothing; "
            "operators approve, reject, cancel and retry; admins also hold the kill switch."
        }
    };
    page("Sign in", None, body)
}

// ---- the feed -------------------------------------------------------------------

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    Resolved,
    Escalated,
    Closed,
    Failed,
    Cancelled,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Open => "open",
            Phase::Resolved => "resolved",
            Phase::Escalated => "escalated",
            Phase::Closed => "closed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    fn of(run: &Run) -> Phase {
        match run.status {
            RunStatus::Runnable | RunStatus::Running | RunStatus::Waiting => Phase::Open,
            RunStatus::Failed => Phase::Failed,
            RunStatus::Cancelled => Phase::Cancelled,
            RunStatus::Completed => match run.node.as_str() {
                "resolve" => Phase::Resolved,
                "escalate" => Phase::Escalated,
                _ => Phase::Closed,
            },
        }
    }
}

/// One incident as the feed lists it.
pub(crate) struct Row {
    pub run: String,
    pub service: String,
    pub anomaly: String,
    pub severity: Option<String>,
    pub phase: Phase,
    pub node: String,
    pub waits_for: String,
    pub needs_decision: bool,
    pub age_ms: i64,
    pub created_at: i64,
    pub proposal: Option<Proposal>,
    pub outcome: Option<String>,
    pub mttr_secs: Option<f64>,
}

/// What a run waits for, in words.
fn waits_for(run: &Run, s: &Incident, now: Timestamp) -> String {
    match run.status {
        RunStatus::Waiting if run.node == "await_approval" => {
            let until =
                s.approval_deadline.map(|d| format!(", escalates in {}", span(d.0 - now.0))).unwrap_or_default();
            format!("a human decision on gate {}{until}", s.gate.as_deref().unwrap_or("?"))
        }
        RunStatus::Waiting => {
            let timer = run.wake_at.map(|t| format!("its timer (in {})", span(t.0 - now.0)));
            let signals = (!run.wait_signals.is_empty()).then(|| format!("a signal ({})", run.wait_signals.join(", ")));
            let what = [timer, signals].into_iter().flatten().collect::<Vec<_>>().join(" or ");
            format!("{}: {}", words(&run.node), if what.is_empty() { "nothing".into() } else { what })
        }
        RunStatus::Runnable if run.attempt > 1 => {
            format!(
                "retry {} of {}{}",
                run.attempt,
                words(&run.node),
                run.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            )
        }
        RunStatus::Runnable | RunStatus::Running => format!("a worker: {} next", words(&run.node)),
        _ => "nothing".into(),
    }
}

impl Row {
    pub(crate) fn of(run: &Run, now: Timestamp) -> Option<Row> {
        let s: Incident = serde_json::from_value(run.state.clone()).ok()?;
        let d = s.detection.as_ref()?;
        let phase = Phase::of(run);
        let proposal = Proposal::of(run);
        Some(Row {
            run: run.id.to_string(),
            service: d.service.clone(),
            anomaly: d.anomaly_type.clone(),
            severity: s.severity.and_then(|v| serde_json::to_value(v).ok()).and_then(|v| v.as_str().map(str::to_owned)),
            phase,
            node: run.node.clone(),
            waits_for: if phase == Phase::Open { waits_for(run, &s, now) } else { String::new() },
            needs_decision: proposal.as_ref().is_some_and(|p| p.waiting),
            age_ms: now.0 - run.created_at.0,
            created_at: run.created_at.0,
            proposal,
            outcome: s.outcome.clone(),
            mttr_secs: s.mttr_secs,
        })
    }
}

const PHASES: [&str; 6] = ["open", "resolved", "escalated", "closed", "failed", "cancelled"];
const SEVERITIES: [&str; 4] = ["sev1", "sev2", "sev3", "sev4"];

pub(crate) fn feed(session: &Session, filter: &FeedFilter, services: &BTreeSet<String>, rows: Vec<Row>) -> Markup {
    let (mut open, mut history): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.phase == Phase::Open);
    // Waiting on a human first, then the most severe, then the oldest.
    open.sort_by(|a, b| {
        (!a.needs_decision, a.severity.clone().unwrap_or_else(|| "sev9".into()), a.created_at).cmp(&(
            !b.needs_decision,
            b.severity.clone().unwrap_or_else(|| "sev9".into()),
            b.created_at,
        ))
    });
    history.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let selected = |current: &Option<String>, v: &str| current.as_deref() == Some(v);
    let body = html! {
        h1 { "Incidents" }
        form class="filters" method="get" action="/console" aria-label="Filter incidents" {
            label { "Status "
                select name="status" {
                    option value="all" { "all" }
                    @for p in PHASES { option value=(p) selected[selected(&filter.status, p)] { (p) } }
                }
            }
            label { "Service "
                select name="service" {
                    option value="all" { "all" }
                    @for s in services { option value=(s) selected[selected(&filter.service, s)] { (s) } }
                }
            }
            label { "Severity "
                select name="severity" {
                    option value="all" { "all" }
                    @for s in SEVERITIES { option value=(s) selected[selected(&filter.severity, s)] { (s.to_uppercase()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        div id="feed" data-live="feed" {
            h2 { "Open " span class="count" { "(" (open.len()) ")" } }
            @if open.is_empty() {
                p class="empty" { "No open incident." }
            } @else {
                div class="table-wrap" {
                    table class="incidents open" {
                        thead { tr {
                            th scope="col" { "Service" } th scope="col" { "Severity" } th scope="col" { "State" }
                            th scope="col" { "Waiting for" } th scope="col" { "Age" } th scope="col" { "Proposed action" }
                        } }
                        tbody {
                            @for r in &open {
                                tr data-run=(r.run) class={ @if r.needs_decision { "needs-decision" } } {
                                    td { a href={ "/console/incidents/" (r.run) } { (r.service) } div class="sub" { (words(&r.anomaly)) } }
                                    td { (severity(r.severity.as_deref())) }
                                    td { (words(&r.node)) }
                                    td { @if r.needs_decision { strong { "⚠ decision needed: " } } (r.waits_for) }
                                    td { (span(r.age_ms)) }
                                    td {
                                        @if let Some(p) = &r.proposal {
                                            (p.action) " on " code { (p.target) }
                                            div class="sub" { "risk: " (words(&p.blast_radius)) ", downtime " (p.estimated_downtime_secs) "s" }
                                        } @else { "—" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "History " span class="count" { "(" (history.len()) ")" } }
            @if history.is_empty() {
                p class="empty" { "Nothing has ended yet." }
            } @else {
                div class="table-wrap" {
                    table class="incidents history" {
                        thead { tr {
                            th scope="col" { "Service" } th scope="col" { "Severity" } th scope="col" { "Ended as" }
                            th scope="col" { "Outcome" } th scope="col" { "MTTR" } th scope="col" { "Opened" }
                        } }
                        tbody {
                            @for r in &history {
                                tr data-run=(r.run) {
                                    td { a href={ "/console/incidents/" (r.run) } { (r.service) } div class="sub" { (words(&r.anomaly)) } }
                                    td { (severity(r.severity.as_deref())) }
                                    td { span class={ "phase phase-" (r.phase.as_str()) } { (r.phase.as_str()) } }
                                    td { (r.outcome.as_deref().unwrap_or("—")) }
                                    td { @if let Some(m) = r.mttr_secs { (span((m * 1000.0) as i64)) } @else { "—" } }
                                    td { (time(r.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Incidents", Some(session), body)
}

// ---- one incident -----------------------------------------------------------------

/// The metric chart's window: from a while before detection to after the
/// last thing that happened (or now), at most six hours.
pub(crate) fn chart_window(s: &Incident, run: &Run, now: Timestamp) -> (Timestamp, Timestamp) {
    let start = s.detection.as_ref().map_or(run.created_at, |d| d.started_at.min(run.created_at));
    let end = s.resolved_at.or(run.finished_at).unwrap_or(now);
    let from = start.saturating_sub(Duration::from_secs(15 * 60));
    let to = end.saturating_add(Duration::from_secs(60)).min(from.saturating_add(Duration::from_secs(6 * 3600)));
    (from, to)
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "approve" => "Your approval was recorded; the incident moves on.",
        "reject" => "Your rejection was recorded.",
        "cancel" => "The incident was asked to stop; it stops at its next step.",
        "retry" => "The incident will be retried from the step that failed.",
        "requeue" => "The message was put back in the outbox.",
        "kill-switch" => "The kill switch was set.",
        _ => return None,
    })
}

/// One line of the incident's timeline.
struct Line {
    at: i64,
    kind: &'static str,
    who: String,
    what: String,
}

fn timeline(detail: &RunDetail, s: &Incident) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for c in &detail.history {
        let what = match &c.outcome {
            StepOutcome::Route { route, to } => format!("{} → {route} → {}", words(&c.node), words(to)),
            StepOutcome::Wait => format!("{}: waiting", words(&c.node)),
            StepOutcome::Retry { error } => format!("{}: will retry ({error})", words(&c.node)),
            StepOutcome::Failed { error } => format!("{}: failed ({error})", words(&c.node)),
            other => format!("{}: {}", words(&c.node), other.label()),
        };
        lines.push(Line {
            at: c.finished_at.0,
            kind: "step",
            who: c.worker.clone(),
            what: format!("step {} ({} ms) {what}", c.step, c.finished_at.0 - c.started_at.0),
        });
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    for sig in &detail.signals {
        let p = &sig.payload;
        let who = text(p, "by").or_else(|| text(p, "source")).unwrap_or_else(|| "—".into());
        let mut what = words(&sig.kind);
        if let Some(g) = text(p, "gate") {
            what.push_str(&format!(" gate {g}"));
        }
        if let Some(v) = text(p, "via") {
            what.push_str(&format!(" via {v}"));
        }
        if let Some(r) = text(p, "reason").filter(|r| !r.is_empty()) {
            what.push_str(&format!(": {r}"));
        }
        lines.push(Line { at: sig.received_at.0, kind: "signal", who, what });
    }
    for t in &s.timeline {
        lines.push(Line { at: t.at.0, kind: "note", who: words(&t.node), what: t.what.clone() });
    }
    lines.sort_by_key(|l| l.at);
    lines
}

fn deeper(level: pulldown_cmark::HeadingLevel) -> pulldown_cmark::HeadingLevel {
    use pulldown_cmark::HeadingLevel::*;
    match level {
        H1 => H3,
        H2 => H4,
        H3 => H5,
        _ => H6,
    }
}

/// The postmortem's Markdown as HTML. It quotes alert text, so it is not
/// trusted: HTML inside it is shown as text, links go only to http(s) or
/// within the console, and images are not loaded.
fn markdown(text: &str) -> Markup {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let safe = |url: &str| ["https://", "http://", "/console/", "#"].iter().any(|p| url.starts_with(p));
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) if !safe(&dest_url) => {
            Event::Start(Tag::Link { link_type, dest_url: "#".into(), title, id })
        }
        Event::Start(Tag::Image { dest_url, .. }) => Event::Text(format!("[image: {dest_url}] ").into()),
        Event::End(TagEnd::Image) => Event::Text("".into()),
        // Under the page's own "Postmortem" heading: one level down.
        Event::Start(Tag::Heading { level, id, classes, attrs }) => {
            Event::Start(Tag::Heading { level: deeper(level), id, classes, attrs })
        }
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(deeper(level))),
        e => e,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    PreEscaped(out)
}

pub(crate) fn incident(
    session: &Session,
    detail: &RunDetail,
    s: &Incident,
    shape: Option<&Shape>,
    readings: Option<Result<Vec<(Timestamp, f64)>, String>>,
    done: Option<&str>,
    now: Timestamp,
) -> Markup {
    let run = &detail.run;
    let d = s.detection.as_ref();
    let service = d.map_or("?", |d| d.service.as_str());
    let phase = Phase::of(run);
    let proposal = Proposal::of(run);
    let operator = session.role >= Role::Operator;
    let title = format!("{} on {service}", d.map_or("incident".into(), |d| words(&d.anomaly_type)));
    let body = html! {
        p class="crumbs" { a href="/console" { "← Incidents" } }
        @if let Some(n) = notice(done) { p class="notice ok" role="status" { "✓ " (n) } }
        div id="incident" data-live="incident" data-run=(run.id) {
            h1 { (title) " " (severity(s.severity.and_then(|v| serde_json::to_value(v).ok()).as_ref().and_then(Value::as_str))) }
            dl class="facts" {
                dt { "Status" } dd { span class={ "phase phase-" (phase.as_str()) } { (phase.as_str()) } " · at " strong { (words(&run.node)) } }
                @if phase == Phase::Open { dt { "Waiting for" } dd { (waits_for(run, s, now)) } }
                dt { "Opened" } dd { (time(run.created_at.0)) " (" (span(now.0 - run.created_at.0)) " ago)" }
                @if let Some(d) = d {
                    dt { "Signal" } dd { code { (d.metric) } " at " (format!("{:.3}", d.observed)) " (normal " (format!("{:.3}", d.baseline_mean)) " ± " (format!("{:.3}", d.baseline_stddev)) ")" }
                    @if let Some(summary) = d.annotations.get("summary") { dt { "Summary" } dd { (summary) } }
                }
                @if !s.affected.is_empty() { dt { "Affected" } dd { (s.affected.join(", ")) } }
                @if let Some(o) = &s.outcome { dt { "Outcome" } dd { (o) } }
                @if let Some(m) = s.mttr_secs { dt { "MTTR" } dd { (span((m * 1000.0) as i64)) } }
                @if let Some(e) = &run.error { dt { "Error" } dd { (e) } }
                dt { "Run" } dd { code { (run.id) } }
            }
            @if let Some(r) = &s.recurrence {
                p class="notice warn" role="note" { "⟳ Recurring: " (r.describe()) }
            }
            @if let Some(p) = &proposal { (proposal_box(session, run.id, p, operator)) }
            @if operator && phase == Phase::Open {
                details class="operate" {
                    summary { "Cancel this incident…" }
                    form method="post" action={ "/console/incidents/" (run.id) "/cancel" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="cancel-reason" { "Why" }
                        input id="cancel-reason" name="reason" type="text";
                        button type="submit" class="danger" { "Cancel the incident" }
                    }
                }
            }
            @if operator && run.status == RunStatus::Failed {
                form method="post" action={ "/console/incidents/" (run.id) "/retry" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Retry from the failed step" }
                }
            }
            section aria-labelledby="h-graph" {
                h2 id="h-graph" { "Workflow" }
                @if let Some(shape) = shape { (super::svg::graph(shape, &detail.history, run)) }
            }
            section aria-labelledby="h-chart" {
                h2 id="h-chart" { "Metric" }
                @match (&readings, d) {
                    (Some(Ok(points)), Some(d)) => (super::svg::chart(d, points, s, &detail.history)),
                    (Some(Err(e)), _) => p class="notice error" { "The metric store could not be read: " (e) },
                    _ => p class="empty" { "No metric store is connected to the console." },
                }
            }
            section aria-labelledby="h-analysis" {
                h2 id="h-analysis" { "Hypotheses" }
                @if s.analysis.hypotheses.is_empty() {
                    p class="empty" { "No analysis yet." }
                } @else {
                    div class="table-wrap" { table {
                        thead { tr { th scope="col" { "Hypothesis" } th scope="col" { "Confidence" } th scope="col" { "Rule" } th scope="col" { "Strength" } th scope="col" { "Retrieval" } th scope="col" { "Evidence" } } }
                        tbody { @for h in &s.analysis.hypotheses { tr {
                            td { (h.summary) div class="sub" { code { (h.cause) } } }
                            td { strong { (format!("{:.0}%", h.confidence * 100.0)) } }
                            td { (format!("{:.2}", h.rule)) } td { (format!("{:.2}", h.strength)) } td { (format!("{:.2}", h.retrieval)) }
                            td { ul { @for e in &h.evidence { li { (e) } } } }
                        } } }
                    } }
                }
                @if !s.analysis.evidence.is_empty() {
                    h3 { "Evidence" }
                    dl class="facts" { @for (k, e) in &s.analysis.evidence { dt { (words(k)) } dd { code { (serde_json::to_string(e).unwrap_or_default()) } } } }
                }
            }
            @if !s.analysis.similar.is_empty() || s.analysis.memory_note.is_some() {
                section aria-labelledby="h-similar" {
                    h2 id="h-similar" { "Seen before" }
                    @if let Some(n) = &s.analysis.memory_note { p class="sub" { (n) } }
                    ul { @for n in &s.analysis.similar {
                        li {
                            a href={ "/console/incidents/" (n.incident.incident) } { (n.incident.service) ": " (words(&n.incident.symptom)) }
                            " — " (format!("{:.0}% similar", n.similarity * 100.0))
                            @if let Some(r) = &n.incident.remedy { ", fixed by " (r.action) " on " code { (r.target) } }
                            @if let Some(o) = &n.incident.outcome { ", " (o) }
                            @if let Some(m) = n.incident.mttr_secs { ", MTTR " (span((m * 1000.0) as i64)) }
                        }
                    } }
                }
            }
            @if !s.actions.is_empty() {
                section aria-labelledby="h-actions" {
                    h2 id="h-actions" { "Actions" }
                    @for a in &s.actions {
                        article class="action" {
                            h3 { (a.action.action.action) " on " code { (a.action.action.target) } @if a.dry_run { " (dry run: nothing was done)" } }
                            dl class="facts" {
                                dt { "When" } dd { (time(a.at.0)) }
                                @if let Some(g) = &a.gate { dt { "Gate" } dd { code { (g) } } }
                                dt { "Runbook" } dd { (a.action.runbook) " / " (a.action.step) }
                                dt { "Downtime" } dd { (a.action.estimated_downtime.as_secs()) " s (estimated)" }
                                dt { "Blast radius" } dd { (serde_json::to_value(a.action.blast_radius).ok().as_ref().and_then(Value::as_str).map(words).unwrap_or_default()) }
                                dt { "Rollback" } dd { (a.action.rollback) }
                            }
                            details { summary { "Parameters" } pre { (json_text(&serde_json::to_value(&a.action.action.params).unwrap_or_default())) } }
                            details { summary { "State before" } pre { (json_text(&a.pre_state)) } }
                            details { summary { "Outcome" } pre { (json_text(&a.outcome)) } }
                        }
                    }
                }
            }
            section aria-labelledby="h-timeline" {
                h2 id="h-timeline" { "Timeline" }
                div class="table-wrap" { table class="timeline" {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Who" } th scope="col" { "What" } } }
                    tbody { @for l in timeline(detail, s) { tr {
                        td { (time(l.at)) } td { (l.kind) } td { (l.who) } td { (l.what) }
                    } } }
                } }
            }
            @if let Some(pm) = &s.postmortem {
                section aria-labelledby="h-postmortem" class="postmortem" {
                    h2 id="h-postmortem" { "Postmortem" }
                    (markdown(pm))
                }
            }
        }
    };
    page(&title, Some(session), body)
}

/// The proposal on the table, and (for operators, while it waits) the
/// buttons that lead to its confirmation.
fn proposal_box(session: &Session, run: RunId, p: &Proposal, operator: bool) -> Markup {
    html! {
        section class={ "proposal" @if p.waiting { " waiting" } } aria-labelledby="h-proposal" {
            h2 id="h-proposal" { @if p.waiting { "⚠ Waiting for your decision" } @else { "Proposed action" } }
            (proposal_facts(p))
            @if p.waiting {
                @if operator {
                    div class="decide" {
                        a class="button approve" href={ "/console/incidents/" (run) "/decide?kind=approve&gate=" (p.gate) } { "Approve…" }
                        a class="button reject" href={ "/console/incidents/" (run) "/decide?kind=reject&gate=" (p.gate) } { "Reject…" }
                    }
                } @else {
                    p class="sub" { "You are signed in as " (session.role) ": you can see this proposal but not decide it." }
                }
            }
        }
    }
}

fn proposal_facts(p: &Proposal) -> Markup {
    html! {
        dl class="facts" {
            dt { "Action" } dd { strong { (p.action) } " on " code { (p.target) } " (" (p.executor) ")" }
            dt { "Parameters" } dd { code { (serde_json::to_string(&p.params).unwrap_or_default()) } }
            dt { "Downtime" } dd { (p.estimated_downtime_secs) " s (estimated)" }
            dt { "Blast radius" } dd { (words(&p.blast_radius)) }
            dt { "Rollback" } dd { (p.rollback) }
            @if let Some(h) = &p.top_hypothesis { dt { "Because" } dd { (h) } }
            dt { "Gate" } dd { code { (p.gate) } }
            @if let Some(deadline) = p.deadline { dt { "Escalates at" } dd { (time(deadline)) } }
            @if let Some(decided) = &p.decided { dt { "Decided" } dd { (decided) } }
        }
    }
}

/// The confirmation: exactly what will be approved or rejected.
pub(crate) fn confirm(
    session: &Session,
    run: &Run,
    current: Option<&Proposal>,
    kind: &str,
    gate: &str,
    nonce: &str,
) -> Markup {
    let verb = if kind == "approve" { "Approve" } else { "Reject" };
    let body = html! {
        p class="crumbs" { a href={ "/console/incidents/" (run.id) } { "← Back to the incident" } }
        h1 { (verb) " this action?" }
        @match current {
            Some(p) if p.gate == gate && p.waiting => {
                p { "Your decision applies to exactly this proposal (gate " code { (p.gate) } ") and to nothing else: if the incident is re-planned meanwhile, it is refused." }
                (proposal_facts(p))
                form method="post" action={ "/console/incidents/" (run.id) "/" (kind) } class="confirm" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="gate" value=(p.gate);
                    input type="hidden" name="nonce" value=(nonce);
                    label for="reason" { "Reason (kept in the record)" }
                    textarea id="reason" name="reason" rows="2" {}
                    button type="submit" class={ "button " (kind) } { (verb) " gate " (p.gate) }
                }
            }
            Some(p) => {
                p class="notice error" role="alert" { "Gate " code { (gate) } " is not the proposal waiting now" @if p.waiting { " (the incident waits on gate " code { (p.gate) } ")" } ". Go back to the incident to see what is proposed." }
            }
            None => p class="notice error" role="alert" { "This incident has no proposal waiting for a decision." },
        }
    };
    page(&format!("{verb}?"), Some(session), body)
}

pub(crate) fn refused(session: &Session, run: RunId, why: &str) -> Response {
    let body = html! {
        h1 { "Not applied" }
        p class="notice error" role="alert" { (why) }
        p { a href={ "/console/incidents/" (run) } { "Back to the incident" } }
    };
    (StatusCode::CONFLICT, page("Not applied", Some(session), body)).into_response()
}

// ---- operations -------------------------------------------------------------------

pub(crate) fn operations(
    session: &Session,
    kill: &KillSwitch,
    breaker: Result<Breaker, String>,
    policy: &PolicyConfig,
    dead: &[OutboxEntry],
    now: Timestamp,
) -> Markup {
    let admin = session.role >= Role::Admin;
    let operator = session.role >= Role::Operator;
    let body = html! {
        h1 { "Operations" }
        section aria-labelledby="h-kill" {
            h2 id="h-kill" { "Kill switch" }
            p {
                @if kill.enabled { strong class="state-bad" { "ON: " } "nothing is auto-approved and no executor acts." }
                @else { strong { "Off: " } "the policy may auto-approve low-risk actions." }
                @if let (Some(at), Some(by)) = (kill.updated_at, &kill.updated_by) { " Set by " (by) " at " (time(at)) "." }
            }
            @if admin {
                form method="post" action="/console/kill-switch" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="enabled" value=(if kill.enabled { "off" } else { "on" });
                    button type="submit" class=(if kill.enabled { "" } else { "danger" }) {
                        @if kill.enabled { "Turn the kill switch off" } @else { "Turn the kill switch on" }
                    }
                }
            }
        }
        section aria-labelledby="h-breaker" {
            h2 id="h-breaker" { "Auto-approval breaker" }
            @match breaker {
                Ok(Breaker::Closed { failure_rate }) => p { strong { "Closed: " } "auto-approval allowed; failure rate " (format!("{:.0}%", failure_rate * 100.0)) " over the last " (span(policy.breaker.window.as_millis() as i64)) "." },
                Ok(Breaker::Open { failure_rate, until }) => p { strong class="state-bad" { "OPEN: " } "every action needs a human until " (time(until.0)) " (in " (span(until.0 - now.0)) "); failure rate " (format!("{:.0}%", failure_rate * 100.0)) "." },
                Err(e) => p class="notice error" { "The breaker's state could not be read: " (e) },
            }
        }
        section aria-labelledby="h-dead" {
            h2 id="h-dead" { "Dead-lettered notifications " span class="count" { "(" (dead.len()) ")" } }
            @if dead.is_empty() {
                p class="empty" { "None: every Slack and PagerDuty message was delivered or is being retried." }
            } @else {
                div class="table-wrap" { table {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Topic" } th scope="col" { "Incident" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "" } } }
                    tbody { @for m in dead { tr {
                        td { (m.id) } td { (m.topic) }
                        td { a href={ "/console/incidents/" (m.run_id) } { (m.run_id.get(..8).unwrap_or(&m.run_id)) } }
                        td { (m.status) } td { (m.attempts) } td { (m.last_error.as_deref().unwrap_or("—")) }
                        td { @if operator {
                            form method="post" action={ "/console/outbox/" (m.id) "/requeue" } {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" { "Requeue" }
                            }
                        } }
                    } } }
                } }
            }
        }
    };
    page("Operations", Some(session), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postmortem_markdown_cannot_carry_markup_or_scripts() {
        let html = markdown(
            "# Title\n\n<script>alert(1)</script> <b onmouseover=x>bold</b>\n\n\
             [ok](https://runbooks.example/x) [bad](javascript:alert(1)) [data](data:text/html,x)\n\n\
             ![pixel](https://tracker.example/p.png)\n",
        )
        .into_string();
        assert!(html.contains("<h3>Title</h3>"), "under the page's own headings: {html}");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script"), "{html}");
        assert!(!html.contains("<b "), "{html}");
        assert!(html.contains(r#"href="https://runbooks.example/x""#), "{html}");
        assert!(!html.contains(r#"href="javascript:"#) && !html.contains(r#"href="data:"#), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn durations_read_as_on_call_reads_them() {
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(725_000), "12m 5s");
        assert_eq!(span(12_000_000), "3h 20m");
        assert_eq!(span(187_200_000), "2d 4h");
        assert_eq!(span(-5), "0s");
    }
}
