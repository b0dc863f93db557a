//! The incident page's two drawings, as inline SVG built on the server: the
//! workflow graph with the path this run took, and the metric around the
//! incident. Every mark also has words (a label, a list), so neither colour
//! nor the drawing is the only way to read them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use engine::{Checkpoint, Run, RunStatus, Shape, StepOutcome, Timestamp};
use maud::{html, Markup, PreEscaped};
use nodes::incident::Detection;
use nodes::workflow::Incident;

/// SVG text: the five characters XML reserves, escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const NODE_W: i32 = 164;
const NODE_H: i32 = 34;
const GAP_X: i32 = 26;
const GAP_Y: i32 = 30;

/// The nodes this run passed through, in order, and the edges it took.
fn path(history: &[Checkpoint]) -> (Vec<String>, BTreeSet<(String, String)>) {
    let mut nodes = Vec::new();
    let mut edges = BTreeSet::new();
    for c in history {
        if nodes.last() != Some(&c.node) {
            nodes.push(c.node.clone());
        }
        if let StepOutcome::Route { to, .. } = &c.outcome {
            edges.insert((c.node.clone(), to.clone()));
        }
    }
    (nodes, edges)
}

/// The graph top to bottom: each node on the row of its shortest distance
/// from the start; the path taken drawn solid and thick, the rest dashed;
/// the current node framed twice and labelled "now".
pub(crate) fn graph(shape: &Shape, history: &[Checkpoint], run: &Run) -> Markup {
    let mut layer: BTreeMap<&str, i32> = BTreeMap::new();
    let mut queue = VecDeque::from([(shape.start.as_str(), 0)]);
    while let Some((n, d)) = queue.pop_front() {
        if layer.contains_key(n) {
            continue;
        }
        layer.insert(n, d);
        for (from, _, to) in &shape.edges {
            if from == n {
                queue.push_back((to.as_str(), d + 1));
            }
        }
    }
    let mut rows: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for n in &shape.nodes {
        rows.entry(*layer.get(n.as_str()).unwrap_or(&0)).or_default().push(n);
    }
    let widest = rows.values().map(Vec::len).max().unwrap_or(1) as i32;
    let width = widest * (NODE_W + GAP_X) + GAP_X + 60;
    let height = rows.len() as i32 * (NODE_H + GAP_Y) + GAP_Y;
    let mut pos: BTreeMap<&str, (i32, i32)> = BTreeMap::new();
    for (row, names) in &rows {
        let n = names.len() as i32;
        let left = (width - 60 - n * NODE_W - (n - 1) * GAP_X) / 2;
        for (i, name) in names.iter().enumerate() {
            pos.insert(name, (left + i as i32 * (NODE_W + GAP_X), GAP_Y / 2 + row * (NODE_H + GAP_Y)));
        }
    }
    let (visited, taken) = path(history);
    let visited_set: BTreeSet<&str> = visited.iter().map(String::as_str).collect();
    let finished = !matches!(run.status, RunStatus::Runnable | RunStatus::Running | RunStatus::Waiting);
    let current = (!finished).then_some(run.node.as_str());
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="graph" viewBox="0 0 {width} {height}" role="img" aria-labelledby="graph-title"><title id="graph-title">Workflow graph: this run went {}{}</title>"#,
        esc(&visited.join(" → ")),
        current.map(|c| format!("; it is now at {c}")).unwrap_or_default()
    );
    svg.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>"#);
    for (from, route, to) in &shape.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(from.as_str()), pos.get(to.as_str())) else { continue };
        let class = if taken.contains(&(from.clone(), to.clone())) { "edge taken" } else { "edge" };
        let d = if y2 > y1 {
            let (ax, ay, bx, by) = (x1 + NODE_W / 2, y1 + NODE_H, x2 + NODE_W / 2, y2);
            format!("M{ax},{ay} C{ax},{} {bx},{} {bx},{by}", ay + GAP_Y / 2, by - GAP_Y / 2)
        } else {
            // Back (or sideways) edges go round the right-hand side.
            let side = width - 30;
            let (ax, ay, bx, by) = (x1 + NODE_W, y1 + NODE_H / 2, x2 + NODE_W, y2 + NODE_H / 2);
            format!("M{ax},{ay} C{side},{ay} {side},{by} {bx},{by}")
        };
        let _ = write!(
            svg,
            r#"<path class="{class}" d="{d}" marker-end="url(#arrow)"><title>{} → {} → {}</title></path>"#,
            esc(from),
            esc(route),
            esc(to)
        );
    }
    for name in &shape.nodes {
        let Some(&(x, y)) = pos.get(name.as_str()) else { continue };
        let is_current = current == Some(name.as_str());
        let was = visited_set.contains(name.as_str());
        let class = match (is_current, was) {
            (true, _) => "node current",
            (false, true) => "node visited",
            _ => "node",
        };
        let mark = if is_current {
            "▶ "
        } else if was {
            "✓ "
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<g class="{class}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/><text x="{}" y="{}">{mark}{}</text>"#,
            x + NODE_W / 2,
            y + NODE_H / 2 + 5,
            esc(&name.replace('_', " "))
        );
        if is_current {
            let _ = write!(svg, r#"<text class="now" x="{}" y="{}">now</text>"#, x + NODE_W + 4, y + NODE_H / 2 + 4);
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    html! {
        figure class="graph" {
            (PreEscaped(svg))
            figcaption {
                "Path: " (visited.join(" → "))
                @if let Some(c) = current { " · now at " strong { (c) } }
                " (✓ visited, ▶ current, solid arrows taken)"
            }
        }
    }
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 34.0;
/// More points than this are thinned to it (every k-th).
const MAX_POINTS: usize = 720;

/// The metric from before detection to after the last step, with the
/// baseline and vertical marks at detection, each action and the end of
/// each verification.
pub(crate) fn chart(d: &Detection, points: &[(Timestamp, f64)], s: &Incident, history: &[Checkpoint]) -> Markup {
    if points.is_empty() {
        return html! { p class="empty" { "No samples of " code { (d.metric) } " for " (d.service) " around this incident." } };
    }
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let shown: Vec<(Timestamp, f64)> = points.iter().step_by(step).copied().collect();
    let mut marks: Vec<(i64, String)> = vec![(d.started_at.0, "detected".into())];
    for a in &s.actions {
        marks.push((a.at.0, a.action.action.action.replace('_', " ")));
    }
    for c in history.iter().filter(|c| c.node == "verify") {
        if let StepOutcome::Route { route, .. } = &c.outcome {
            marks.push((c.finished_at.0, route.replace('_', " ")));
        }
    }
    let t0 = shown.first().map_or(0, |p| p.0 .0).min(marks.iter().map(|m| m.0).min().unwrap_or(i64::MAX));
    let t1 = shown.last().map_or(0, |p| p.0 .0).max(marks.iter().map(|m| m.0).max().unwrap_or(i64::MIN));
    let (mut lo, mut hi) =
        shown.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    lo = lo.min(d.baseline_mean);
    hi = hi.max(d.baseline_mean);
    if (hi - lo).abs() < f64::EPSILON {
        hi = lo + 1.0;
    }
    let span_t = (t1 - t0).max(1) as f64;
    let x = |t: i64| PAD_L + (t - t0) as f64 / span_t * (CHART_W - PAD_L - PAD_R);
    let y = |v: f64| PAD_T + (hi - v) / (hi - lo) * (CHART_H - PAD_T - PAD_B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-labelledby="chart-title"><title id="chart-title">{} of {} from {} to {}: {} samples between {:.3} and {:.3}; normal {:.3}</title>"#,
        esc(&d.metric),
        esc(&d.service),
        nodes::postmortem::rfc3339(Timestamp(t0)),
        nodes::postmortem::rfc3339(Timestamp(t1)),
        points.len(),
        lo,
        hi,
        d.baseline_mean
    );
    let _ = write!(svg, r#"<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{}"/>"#, CHART_H - PAD_B);
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{PAD_L}" y1="{0}" x2="{1}" y2="{0}"/>"#,
        CHART_H - PAD_B,
        CHART_W - PAD_R
    );
    let _ = write!(svg, r#"<text class="tick" x="{}" y="{}">{}</text>"#, PAD_L - 4.0, y(hi) + 4.0, fmt_value(hi));
    let _ = write!(svg, r#"<text class="tick" x="{}" y="{}">{}</text>"#, PAD_L - 4.0, y(lo) + 4.0, fmt_value(lo));
    let yb = y(d.baseline_mean);
    let _ = write!(
        svg,
        r#"<line class="baseline" x1="{PAD_L}" y1="{yb:.1}" x2="{}" y2="{yb:.1}"/><text class="label" x="{}" y="{:.1}">normal</text>"#,
        CHART_W - PAD_R,
        CHART_W - PAD_R - 44.0,
        yb - 4.0
    );
    let line: Vec<String> = shown.iter().map(|(t, v)| format!("{:.1},{:.1}", x(t.0), y(*v))).collect();
    let _ = write!(svg, r#"<polyline class="series" points="{}"/>"#, line.join(" "));
    for (i, (t, label)) in marks.iter().enumerate() {
        let xm = x(*t);
        let ty = PAD_T + 10.0 + (i % 3) as f64 * 12.0;
        let _ = write!(
            svg,
            r#"<line class="mark" x1="{xm:.1}" y1="{PAD_T}" x2="{xm:.1}" y2="{}"/><text class="label" x="{:.1}" y="{ty:.1}">{}</text>"#,
            CHART_H - PAD_B,
            xm + 3.0,
            esc(label)
        );
    }
    let _ = write!(svg, r#"<text class="tick" x="{PAD_L}" y="{}">{}</text>"#, CHART_H - 10.0, clock_of(t0));
    let _ =
        write!(svg, r#"<text class="tick end" x="{}" y="{}">{}</text>"#, CHART_W - PAD_R, CHART_H - 10.0, clock_of(t1));
    svg.push_str("</svg>");
    html! {
        figure class="chart" {
            (PreEscaped(svg))
            figcaption {
                code { (d.metric) } " on " (d.service) ", UTC. Marks: "
                @for (i, (t, label)) in marks.iter().enumerate() {
                    @if i > 0 { ", " }
                    (label) " at " (clock_of(*t))
                }
                "."
            }
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn clock_of(ms: i64) -> String {
    super::view::utc(ms).1
}
