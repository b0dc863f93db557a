//! A blameless postmortem in Markdown, written from the incident's own record.

use std::fmt::Write as _;

use engine::Timestamp;

use crate::workflow::Incident;

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: Timestamp) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.0.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn render(s: &Incident) -> String {
    let mut out = String::new();
    let Some(d) = &s.detection else {
        return "# Incident\n\nNo detection recorded.\n".to_owned();
    };
    let _ = writeln!(out, "# {} on {}\n", d.anomaly_type.replace('_', " "), d.service);
    let _ = writeln!(out, "- Fingerprint: `{}`", s.fingerprint);
    let _ =
        writeln!(out, "- Severity: {}", s.severity.map_or("unknown".to_owned(), |x| format!("{x:?}").to_lowercase()));
    let _ = writeln!(out, "- Affected services: {}", s.affected.join(", "));
    let _ = writeln!(out, "- Outcome: {}", s.outcome.as_deref().unwrap_or("open"));
    if let Some(m) = s.mttr_secs {
        let _ = writeln!(out, "- Time to resolve: {m:.1} s");
    }
    let _ = writeln!(
        out,
        "\n## Detection\n\n{} = {:.2} against a baseline of {:.2} ± {:.2}, from {}.\n",
        d.metric,
        d.observed,
        d.baseline_mean,
        d.baseline_stddev,
        rfc3339(d.started_at)
    );
    let _ = writeln!(out, "## Hypotheses\n");
    for h in &s.analysis.hypotheses {
        let _ = writeln!(
            out,
            "- **{}** — confidence {:.0}% (rule {:.2}, evidence {:.2}, retrieval {:.2}); {}",
            h.cause,
            h.confidence * 100.0,
            h.rule,
            h.strength,
            h.retrieval,
            h.evidence.join("; ")
        );
    }
    if let Some(r) = &s.recurrence {
        let _ = writeln!(out, "\n**{}**", r.describe());
    }
    if !s.analysis.similar.is_empty() {
        let _ = writeln!(out, "\n## Similar past incidents\n");
        for n in &s.analysis.similar {
            let r = &n.incident;
            let _ = writeln!(
                out,
                "- `{}` {} on {} ({}), {:.2} alike: {}{}{}",
                r.incident,
                r.symptom.replace('_', " "),
                r.service,
                r.status.as_str(),
                n.similarity,
                r.remedy
                    .as_ref()
                    .map_or("no action".to_owned(), |m| format!("{} `{}` on `{}`", m.executor, m.action, m.target)),
                r.outcome.as_deref().map(|o| format!(", {o}")).unwrap_or_default(),
                r.mttr_secs.map(|m| format!(", MTTR {m:.0} s")).unwrap_or_default()
            );
        }
    }
    if let Some(note) = &s.analysis.memory_note {
        let _ = writeln!(out, "\n_{note}_");
    }
    let _ = writeln!(out, "\n## Decisions\n");
    for dec in &s.decisions {
        let _ = writeln!(
            out,
            "- {}{} by {} at {}{}",
            if dec.approved { "Approved" } else { "Rejected" },
            dec.gate.as_deref().map(|g| format!(" (gate {g})")).unwrap_or_default(),
            dec.by,
            rfc3339(dec.at),
            if dec.reason.is_empty() { String::new() } else { format!(": {}", dec.reason) }
        );
    }
    let _ = writeln!(out, "\n## Actions\n");
    for a in &s.actions {
        let _ = writeln!(
            out,
            "- {} `{}` on `{}`{} (runbook {}, step \"{}\")",
            a.action.action.executor,
            a.action.action.action,
            a.action.action.target,
            if a.dry_run { " (dry run)" } else { "" },
            a.action.runbook,
            a.action.step
        );
    }
    let _ = writeln!(
        out,
        "\n## Verification\n\n{}\n",
        match &s.verdict {
            Some(v) => v.to_string(),
            None => "not verified".to_owned(),
        }
    );
    let _ = writeln!(out, "## Timeline\n");
    for t in &s.timeline {
        let _ = writeln!(out, "- {} `{}` {}", rfc3339(t.at), t.node, t.what);
    }
    let _ = writeln!(out, "\n## Action items\n");
    if s.rollbacks > 0 {
        let _ = writeln!(out, "- Review why {} rollback(s) were needed and fix the runbook's conditions.", s.rollbacks);
    }
    if s.decisions.iter().any(|d| d.by == "timeout") {
        let _ = writeln!(out, "- Nobody decided in time: check the on-call rota and the approval channel.");
    }
    if let Some(h) = s.analysis.hypotheses.first() {
        let _ = writeln!(out, "- Confirm or refute the top hypothesis: {}.", h.summary);
    }
    if let Some(r) = &s.recurrence {
        let _ = writeln!(
            out,
            "- `{}` keeps needing fixes ({} in 7 days): find why the fix does not hold instead of applying it again.",
            r.target,
            r.previous.len() + 1
        );
    }
    out
}
