//! Graph validation and Mermaid export.

use engine::{Error, Graph, GraphBuilder, NodeContext, NodeError, Transition};

type S = serde_json::Value;

async fn pass(s: S, _: NodeContext) -> Result<(S, Transition), NodeError> {
    Ok((s, Transition::route("next")))
}

fn builder() -> GraphBuilder<S> {
    Graph::builder("g", 1)
}

#[track_caller]
fn check(graph: GraphBuilder<S>, expected: &str) {
    match graph.build() {
        Err(Error::InvalidGraph { reason, .. }) => {
            assert!(reason.contains(expected), "expected an error containing `{expected}`, got `{reason}`")
        }
        Err(other) => panic!("expected InvalidGraph, got {other}"),
        Ok(_) => panic!("expected the graph to be refused with `{expected}`"),
    }
}

#[test]
fn invalid_graphs_are_refused_with_the_reason() {
    check(builder().node("a", pass).edge("a", "next", "b").start("a"), "unknown target node `b`");
    check(builder().node("a", pass).edge("x", "next", "a").start("a"), "unknown source node `x`");
    check(builder().node("a", pass).node("b", pass).start("a"), "unreachable from `a`: b");
    check(
        builder().node("a", pass).node("b", pass).edge("a", "next", "b").edge("b", "next", "a").start("a"),
        "no terminal node",
    );
    check(builder().node("a", pass).node("a", pass).start("a"), "defined twice");
    check(
        builder().node("a", pass).node("b", pass).edge("a", "r", "b").edge("a", "r", "a").start("a"),
        "two edges for route `r`",
    );
    check(builder().node("a", pass), "no start node");
    check(builder().node("a", pass).start("z"), "start node `z` is not defined");
}

#[test]
fn a_valid_graph_exports_mermaid_with_every_edge() {
    let g = builder()
        .node("detect", pass)
        .node("await-approval", pass)
        .node("done", pass)
        .node("rejected", pass)
        .edge("detect", "next", "await-approval")
        .edge("await-approval", "approved", "done")
        .edge("await-approval", "rejected", "rejected")
        .start("detect")
        .build()
        .expect("valid graph");
    assert_eq!(g.target("await-approval", "approved"), Some("done"));
    assert_eq!(g.target("await-approval", "nope"), None);
    let expected = "flowchart TD
    n0[\"start: detect\"]
    n1[\"await-approval\"]
    n2([\"done\"])
    n3([\"rejected\"])
    n0 -->|next| n1
    n1 -->|approved| n2
    n1 -->|rejected| n3
";
    assert_eq!(g.mermaid(), expected);
}
