//! Graph definitions: named nodes, edges labelled by the route a node returns,
//! validated once when built, and exportable as Mermaid.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::node::{Node, NodeContext, NodeError, RetryPolicy, Transition};

/// A validated graph over state `S`. Build one with [`Graph::builder`].
pub struct Graph<S> {
    name: String,
    version: i32,
    start: String,
    nodes: HashMap<String, NodeEntry<S>>,
    /// (from, route) → to
    edges: HashMap<(String, String), String>,
    topology: DiGraph<String, String>,
    _state: PhantomData<fn() -> S>,
}

struct NodeEntry<S> {
    node: Arc<dyn Node<S>>,
    retry: RetryPolicy,
    index: NodeIndex,
}

pub struct GraphBuilder<S> {
    name: String,
    version: i32,
    start: Option<String>,
    nodes: Vec<(String, Arc<dyn Node<S>>, RetryPolicy)>,
    edges: Vec<(String, String, String)>,
}

impl<S> Graph<S> {
    pub fn builder(name: impl Into<String>, version: i32) -> GraphBuilder<S> {
        GraphBuilder { name: name.into(), version, start: None, nodes: Vec::new(), edges: Vec::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn start(&self) -> &str {
        &self.start
    }

    /// The node the edge labelled `route` leads to from `from`.
    pub fn target(&self, from: &str, route: &str) -> Option<&str> {
        self.edges.get(&(from.to_owned(), route.to_owned())).map(String::as_str)
    }

    pub fn retry_policy(&self, node: &str) -> Option<&RetryPolicy> {
        self.nodes.get(node).map(|n| &n.retry)
    }

    /// Node names in declaration order of the underlying graph.
    pub fn node_names(&self) -> Vec<&str> {
        self.topology.node_indices().map(|i| self.topology[i].as_str()).collect()
    }

    /// The graph's nodes and edges, for drawing it.
    pub fn shape(&self) -> Shape {
        let mut edges: Vec<_> = self.topology.edge_indices().collect();
        edges.sort();
        Shape {
            start: self.start.clone(),
            nodes: self.topology.node_indices().map(|i| self.topology[i].clone()).collect(),
            edges: edges
                .into_iter()
                .map(|e| {
                    let (a, b) = self.topology.edge_endpoints(e).expect("edge index from this graph");
                    (self.topology[a].clone(), self.topology[e].clone(), self.topology[b].clone())
                })
                .collect(),
        }
    }

    /// A Mermaid flowchart of the graph; terminal nodes are drawn as stadiums.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for i in self.topology.node_indices() {
            let name = &self.topology[i];
            let terminal = self.topology.neighbors(i).next().is_none();
            let (open, close) = if terminal { ("([", "])") } else { ("[", "]") };
            let marker = if *name == self.start { "start: " } else { "" };
            let _ = writeln!(out, "    n{}{open}\"{marker}{name}\"{close}", i.index());
        }
        let mut edges: Vec<_> = self.topology.edge_indices().collect();
        edges.sort();
        for e in edges {
            let (a, b) = self.topology.edge_endpoints(e).expect("edge index from this graph");
            let _ = writeln!(out, "    n{} -->|{}| n{}", a.index(), self.topology[e], b.index());
        }
        out
    }
}

impl<S> GraphBuilder<S> {
    /// Adds a node with the default retry policy.
    pub fn node(self, name: impl Into<String>, node: impl Node<S>) -> Self {
        self.node_with_retry(name, node, RetryPolicy::default())
    }

    pub fn node_with_retry(mut self, name: impl Into<String>, node: impl Node<S>, retry: RetryPolicy) -> Self {
        self.nodes.push((name.into(), Arc::new(node), retry));
        self
    }

    /// When `from` returns `Transition::Route(route)`, the run moves to `to`.
    pub fn edge(mut self, from: impl Into<String>, route: impl Into<String>, to: impl Into<String>) -> Self {
        self.edges.push((from.into(), route.into(), to.into()));
        self
    }

    pub fn start(mut self, node: impl Into<String>) -> Self {
        self.start = Some(node.into());
        self
    }

    /// Checks the graph: unique node names, edges between known nodes, one
    /// edge per (node, route), a known start node, every node reachable from
    /// it, and at least one terminal node (a node without outgoing edges).
    pub fn build(self) -> Result<Graph<S>> {
        let invalid =
            |reason: String| Error::InvalidGraph { graph: format!("{}@v{}", self.name, self.version), reason };
        let mut topology = DiGraph::new();
        let mut nodes = HashMap::new();
        for (name, node, retry) in self.nodes {
            if name.is_empty() {
                return Err(invalid("a node has an empty name".into()));
            }
            if nodes.contains_key(&name) {
                return Err(invalid(format!("node `{name}` is defined twice")));
            }
            if retry.max_attempts < 1 {
                return Err(invalid(format!("node `{name}`: retry policy needs at least one attempt")));
            }
            let index = topology.add_node(name.clone());
            nodes.insert(name, NodeEntry { node, retry, index });
        }
        let mut edges = HashMap::new();
        for (from, route, to) in self.edges {
            let Some(a) = nodes.get(&from).map(|n| n.index) else {
                return Err(invalid(format!("edge `{from}` -[{route}]-> `{to}`: unknown source node `{from}`")));
            };
            let Some(b) = nodes.get(&to).map(|n| n.index) else {
                return Err(invalid(format!("edge `{from}` -[{route}]-> `{to}`: unknown target node `{to}`")));
            };
            if edges.insert((from.clone(), route.clone()), to.clone()).is_some() {
                return Err(invalid(format!("node `{from}` has two edges for route `{route}`")));
            }
            topology.add_edge(a, b, route);
        }
        let Some(start) = self.start else {
            return Err(invalid("no start node".into()));
        };
        let Some(start_index) = nodes.get(&start).map(|n| n.index) else {
            return Err(invalid(format!("start node `{start}` is not defined")));
        };
        let mut reached = vec![false; topology.node_count()];
        let mut dfs = Dfs::new(&topology, start_index);
        while let Some(i) = dfs.next(&topology) {
            reached[i.index()] = true;
        }
        let mut unreachable: Vec<&str> =
            topology.node_indices().filter(|i| !reached[i.index()]).map(|i| topology[i].as_str()).collect();
        if !unreachable.is_empty() {
            unreachable.sort();
            return Err(invalid(format!("unreachable from `{start}`: {}", unreachable.join(", "))));
        }
        if !topology.node_indices().any(|i| topology.neighbors(i).next().is_none()) {
            return Err(invalid("no terminal node (every node has an outgoing edge)".into()));
        }
        Ok(Graph { name: self.name, version: self.version, start, nodes, edges, topology, _state: PhantomData })
    }
}

/// The outcome of running one node on stored (JSON) state.
pub(crate) enum Executed {
    Ran {
        state: Value,
        transition: Transition,
    },
    Failed(NodeError),
    Panicked(String),
    /// The stored state does not decode into the graph's state type.
    BadState(String),
    UnknownNode,
}

/// A graph with its state type erased, so one worker runs many graphs.
pub(crate) trait ErasedGraph: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> i32;
    fn start(&self) -> &str;
    fn target(&self, from: &str, route: &str) -> Option<&str>;
    fn retry_policy(&self, node: &str) -> Option<&RetryPolicy>;
    fn execute<'a>(&'a self, node: &'a str, state: Value, ctx: NodeContext) -> BoxFuture<'a, Executed>;
    fn mermaid(&self) -> String;
    fn shape(&self) -> Shape;
}

/// A graph's nodes and edges, for drawing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub start: String,
    /// In the order they were added.
    pub nodes: Vec<String>,
    /// (from, route, to).
    pub edges: Vec<(String, String, String)>,
}

impl<S> ErasedGraph for Graph<S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> i32 {
        self.version
    }
    fn start(&self) -> &str {
        &self.start
    }
    fn target(&self, from: &str, route: &str) -> Option<&str> {
        Graph::target(self, from, route)
    }
    fn retry_policy(&self, node: &str) -> Option<&RetryPolicy> {
        Graph::retry_policy(self, node)
    }
    fn mermaid(&self) -> String {
        Graph::mermaid(self)
    }
    fn shape(&self) -> Shape {
        Graph::shape(self)
    }

    fn execute<'a>(&'a self, node: &'a str, state: Value, ctx: NodeContext) -> BoxFuture<'a, Executed> {
        async move {
            let Some(entry) = self.nodes.get(node) else {
                return Executed::UnknownNode;
            };
            let state: S = match serde_json::from_value(state) {
                Ok(s) => s,
                Err(e) => return Executed::BadState(e.to_string()),
            };
            // A panicking node fails its run; it must not take the worker down.
            let ran = std::panic::AssertUnwindSafe(entry.node.run(state, ctx)).catch_unwind().await;
            match ran {
                Ok(Ok((state, transition))) => match serde_json::to_value(&state) {
                    Ok(state) => Executed::Ran { state, transition },
                    Err(e) => Executed::Failed(NodeError::fatal(format!("new state does not encode: {e}"))),
                },
                Ok(Err(e)) => Executed::Failed(e),
                Err(panic) => Executed::Panicked(panic_message(&*panic)),
            }
        }
        .boxed()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The graphs a worker can run, by name and version. A run keeps the version it
/// started on; new runs start on the highest registered version.
#[derive(Clone, Default)]
pub struct Registry {
    graphs: BTreeMap<(String, i32), Arc<dyn ErasedGraph>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register<S>(&mut self, graph: Graph<S>) -> &mut Self
    where
        S: Serialize + DeserializeOwned + Send + 'static,
    {
        self.graphs.insert((graph.name.clone(), graph.version), Arc::new(graph));
        self
    }

    pub(crate) fn get(&self, name: &str, version: i32) -> Option<&Arc<dyn ErasedGraph>> {
        self.graphs.get(&(name.to_owned(), version))
    }

    /// The highest registered version of `name`.
    pub(crate) fn latest(&self, name: &str) -> Option<&Arc<dyn ErasedGraph>> {
        self.graphs.range((name.to_owned(), i32::MIN)..=(name.to_owned(), i32::MAX)).next_back().map(|(_, g)| g)
    }

    /// Mermaid for `name` at `version`, or its latest version.
    pub fn mermaid(&self, name: &str, version: Option<i32>) -> Option<String> {
        match version {
            Some(v) => self.get(name, v),
            None => self.latest(name),
        }
        .map(|g| g.mermaid())
    }

    /// The nodes and edges of `name` at `version`, or of its latest version.
    pub fn shape(&self, name: &str, version: Option<i32>) -> Option<Shape> {
        match version {
            Some(v) => self.get(name, v),
            None => self.latest(name),
        }
        .map(|g| g.shape())
    }

    /// (name, version) of every registered graph.
    pub fn graphs(&self) -> Vec<(String, i32)> {
        self.graphs.keys().cloned().collect()
    }
}
