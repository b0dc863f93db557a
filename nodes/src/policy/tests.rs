use std::time::Duration;

use engine::Timestamp;
use proptest::prelude::*;

use super::*;

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const MIN: Duration = Duration::from_secs(60);

fn ago(d: Duration) -> Timestamp {
    NOW.saturating_sub(d)
}

fn action() -> ProposedAction {
    ProposedAction {
        service: "checkout".into(),
        executor: "kubernetes".into(),
        action: "restart_deployment".into(),
        target: "kubernetes:prod/checkout".into(),
        estimated_downtime: Duration::from_secs(5),
    }
}

fn config() -> PolicyConfig {
    PolicyConfig { allowlist: Allowlist::parse(&["kubernetes:prod/*"]).unwrap(), ..PolicyConfig::default() }
}

fn outcomes(spec: &[(u64, bool)]) -> Vec<Outcome> {
    spec.iter().map(|&(mins_ago, succeeded)| Outcome { at: ago(MIN * mins_ago as u32), succeeded }).collect()
}

/// Applies `change` to a passing setup and checks that exactly `expected` refuses.
#[track_caller]
fn check(change: impl FnOnce(&mut PolicyConfig, &mut ProposedAction, &mut Facts), expected: &str) {
    let (mut c, mut a, mut f) = (config(), action(), Facts::default());
    change(&mut c, &mut a, &mut f);
    match decide(&c, &a, &f, NOW) {
        Decision::NeedsHuman { refusals } => {
            assert_eq!(refusals.len(), 1, "one guard alone refuses: {refusals:?}");
            let got = serde_json::to_value(&refusals[0]).unwrap()["guard"].as_str().unwrap().to_owned();
            assert_eq!(got, expected, "{}", refusals[0]);
        }
        Decision::AutoApprove => panic!("expected `{expected}` to refuse"),
    }
}

#[test]
fn a_safe_allowlisted_action_is_auto_approved() {
    assert_eq!(decide(&config(), &action(), &Facts::default(), NOW), Decision::AutoApprove);
}

#[test]
fn each_guard_alone_blocks_auto_approval() {
    check(|_, _, f| f.kill_switch = true, "kill_switch");
    check(|_, a, _| a.estimated_downtime = Duration::from_secs(60), "downtime");
    check(|_, _, f| f.outcomes = outcomes(&[(1, false), (2, true), (3, true), (4, true), (5, true)]), "breaker_open");
    check(|_, _, f| f.auto_approvals = (0..5).map(|i| ago(Duration::from_secs(i * 10))).collect(), "rate_limit_minute");
    check(
        |_, _, f| f.auto_approvals = (0..30).map(|i| ago(Duration::from_secs(120 + i * 60))).collect(),
        "rate_limit_hour",
    );
    check(|_, a, _| a.target = "kubernetes:staging/checkout".into(), "not_allowlisted");
    check(|c, _, _| c.allowlist = Allowlist::default(), "not_allowlisted");
    check(|_, _, f| f.last_action_on_service = Some(ago(MIN * 9)), "cooldown");
    check(
        |_, a, f| {
            f.failed_attempts =
                vec![FailedAttempt { at: ago(MIN * 300), action: a.action.clone(), target: a.target.clone() }]
        },
        "failed_before",
    );
}

#[test]
fn guards_at_their_edges() {
    let (c, a) = (config(), action());
    // Out of cooldown exactly at its end; a failure outside the loop window is forgiven;
    // a failure of another action on the target, or of this action elsewhere, does not count.
    let failed = |at, action: &str, target: &str| FailedAttempt { at, action: action.into(), target: target.into() };
    let mut f = Facts {
        last_action_on_service: Some(ago(MIN * 10)),
        failed_attempts: vec![
            failed(ago(Duration::from_secs(6 * 3600)), &a.action, &a.target),
            failed(ago(MIN), "scale", &a.target),
            failed(ago(MIN), &a.action, "kubernetes:prod/cart"),
        ],
        ..Facts::default()
    };
    // Four approvals in the last minute are under the limit of five.
    f.auto_approvals = (0..4).map(|i| ago(Duration::from_secs(i * 10))).collect();
    assert_eq!(decide(&c, &a, &f, NOW), Decision::AutoApprove);
}

#[test]
fn every_reason_is_listed_and_readable() {
    let mut f = Facts { kill_switch: true, ..Facts::default() };
    f.last_action_on_service = Some(ago(MIN));
    let mut a = action();
    a.estimated_downtime = Duration::from_secs(120);
    let d = decide(&config(), &a, &f, NOW);
    assert_eq!(
        d.reason(),
        format!(
            "needs a human: the kill switch is on; estimated downtime 120s is not under 60s; service in cooldown until {}",
            ago(MIN).saturating_add(MIN * 10).0
        )
    );
}

#[test]
fn the_breaker_opens_above_the_threshold_and_closes_after_its_cool_down() {
    let c = BreakerConfig::default();
    // 1 failure in 10 is 10%: not above the threshold.
    let ten = outcomes(&[
        (1, false),
        (2, true),
        (3, true),
        (4, true),
        (5, true),
        (6, true),
        (7, true),
        (8, true),
        (9, true),
        (10, true),
    ]);
    assert!(matches!(breaker(&c, &ten, NOW), Breaker::Closed { .. }));
    // A second failure, 2 minutes ago: 1 in the 9 outcomes up to then (11%)
    // trips the breaker at that moment, for 15 minutes.
    let mut two = ten.clone();
    two[1].succeeded = false;
    match breaker(&c, &two, NOW) {
        Breaker::Open { failure_rate, until } => {
            assert!((failure_rate - 0.2).abs() < 1e-9, "2 failures in 10 now");
            assert_eq!(until, ago(MIN * 2).saturating_add(c.cool_down));
        }
        other => panic!("expected open, got {other:?}"),
    }
    // After the cool-down it closes, even though the failures are still in the window.
    let later = NOW.saturating_add(MIN * 15);
    assert!(matches!(breaker(&c, &two, later), Breaker::Closed { .. }));
    // Too few outcomes never trip it.
    assert!(matches!(breaker(&c, &outcomes(&[(1, false), (2, false)]), NOW), Breaker::Closed { .. }));
    // Outcomes older than the window do not count.
    let old = outcomes(&[(61, false), (62, false), (63, false), (64, false), (65, false)]);
    assert!(matches!(breaker(&c, &old, NOW), Breaker::Closed { .. }));
}

#[test]
fn patterns() {
    for (p, t, want) in [
        ("kubernetes:prod/*", "kubernetes:prod/checkout", true),
        ("kubernetes:prod/*", "kubernetes:staging/checkout", false),
        ("*", "", true),
        ("ecs:*/orders", "ecs:eu-west-1/orders", true),
        ("ecs:*/orders", "ecs:eu-west-1/orders-v2", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        ("ab*ba", "aba", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(Allowlist::parse(&[p]).unwrap().admits(t), want, "{p} vs {t}");
    }
}

proptest! {
    #[test]
    fn a_pattern_made_from_a_text_matches_it(text in "[a-z:/-]{0,20}", cut in any::<(usize, usize)>()) {
        let (i, j) = (cut.0 % (text.len() + 1), cut.1 % (text.len() + 1));
        let (i, j) = (i.min(j), i.max(j));
        let pattern = format!("{}*{}", &text[..i], &text[j..]);
        prop_assert!(Allowlist::parse(&[&pattern]).unwrap().admits(&text));
    }

    #[test]
    fn the_decision_is_a_function_of_its_inputs(
        kill in any::<bool>(),
        downtime in 0u64..200,
        spec in proptest::collection::vec((0u64..120, any::<bool>()), 0..30),
        approvals in proptest::collection::vec(0u64..7200, 0..40),
    ) {
        let mut a = action();
        a.estimated_downtime = Duration::from_secs(downtime);
        let facts = Facts {
            kill_switch: kill,
            outcomes: outcomes(&spec),
            auto_approvals: approvals.iter().map(|s| ago(Duration::from_secs(*s))).collect(),
            ..Facts::default()
        };
        let d1 = decide(&config(), &a, &facts, NOW);
        let mut reversed = facts.clone();
        reversed.outcomes.reverse();
        reversed.auto_approvals.reverse();
        prop_assert_eq!(&d1, &decide(&config(), &a, &reversed, NOW), "order of facts does not matter");
        let approved = d1 == Decision::AutoApprove;
        let breaker_closed = matches!(breaker(&config().breaker, &facts.outcomes, NOW), Breaker::Closed { .. });
        prop_assert_eq!(approved, !kill && downtime < 60 && breaker_closed
            && facts.auto_approvals.iter().filter(|t| **t > ago(MIN)).count() < 5
            && facts.auto_approvals.iter().filter(|t| **t > ago(MIN * 60)).count() < 30);
    }
}
