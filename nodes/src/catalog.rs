//! The service catalogue: what a team runs, how much each service matters,
//! who owns it, what it depends on, and where it runs. It is the only source
//! of action targets: a runbook step's target template is filled from the
//! service's placement here, never from an event's or an alert's labels.
//! Labels are evidence; at most they pick which catalogued service an alert
//! is about (`namespace` + `deployment`/`pod`), or which of the service's
//! listed instances it names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyze::ServiceGraph;
use crate::incident::{Detection, Tier};

/// One service as a team describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// 1 takes customer traffic directly; 3 is internal. Default 2.
    #[serde(default = "tier2")]
    pub tier: Tier,
    #[serde(default)]
    pub owners: Vec<String>,
    #[serde(default)]
    pub slack: Option<SlackRoute>,
    /// Services this one calls: a failure there explains symptoms here.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub runs_on: Placement,
    /// Where this service's metrics are read from; the configuration's
    /// `metrics_from` when absent.
    #[serde(default)]
    pub metrics_from: Option<MetricsFrom>,
}

/// A metric store: Sentinel's own (events sent to it, in ClickHouse or
/// memory), or a team's Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFrom {
    Sentinel,
    Prometheus,
}

fn tier2() -> Tier {
    Tier::Tier2
}

/// Where a service's incidents are discussed and who may approve its actions in Slack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackRoute {
    /// A channel id (`C0123…`) or name; the global channel when absent.
    pub channel: Option<String>,
    /// Slack user ids allowed to approve this service's actions.
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// Where a service runs; any combination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub kubernetes: Option<KubeWorkload>,
    pub ecs: Option<EcsService>,
    pub ec2: Option<Ec2Instances>,
}

impl Placement {
    /// The Kubernetes Deployment named after the service, in `namespace`.
    pub fn kubernetes_namespace(namespace: &str) -> Placement {
        Placement {
            kubernetes: Some(KubeWorkload { namespace: namespace.to_owned(), ..KubeWorkload::default() }),
            ..Placement::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeWorkload {
    pub namespace: String,
    /// The Deployment; the service's name when absent.
    pub deployment: Option<String>,
    /// PersistentVolumeClaims the service's data lives on (`{claim}`).
    #[serde(default)]
    pub claims: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsService {
    pub cluster: String,
    /// The ECS service; the service's name when absent.
    pub service: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Instances {
    pub region: String,
    /// The service's instances, when they are fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    /// Tags every instance of the service carries (an autoscaling group's
    /// instances come and go): an alert's `instance_id` label (or an
    /// `instance` label holding an instance id) names the instance, and the
    /// executor acts only after AWS shows it carries these tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The action parameter that carries a service's EC2 tags to the executor.
pub use executors::aws::REQUIRE_TAGS;

/// A catalogue that failed its checks; `at` is the path of the offending value
/// (`services[2].depends_on[0]`), for the caller to turn into a file position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub at: String,
    pub message: String,
}

/// The catalogue, checked: names unique, dependencies known, placements complete.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    services: BTreeMap<String, Service>,
    /// Where a service the catalogue does not list runs, names defaulting to
    /// the service's; `None`: such a service is never acted on.
    unlisted: Option<Placement>,
    graph: ServiceGraph,
}

/// The template placeholders a runbook target may use.
pub const PLACEHOLDERS: [&str; 9] =
    ["service", "namespace", "deployment", "claim", "cluster", "ecs_service", "region", "instance", "node"];

impl Catalog {
    /// Checks `services` and builds the catalogue. `unlisted` may not name EC2
    /// instances: those belong to one service.
    pub fn new(services: Vec<Service>, unlisted: Option<Placement>) -> Result<Catalog, Invalid> {
        let mut by_name = BTreeMap::new();
        for (i, s) in services.iter().enumerate() {
            let at = |field: &str| format!("services[{i}].{field}");
            if s.name.trim().is_empty() {
                return Err(Invalid { at: at("name"), message: "a service needs a name".into() });
            }
            if by_name.contains_key(&s.name) {
                return Err(Invalid { at: at("name"), message: format!("service `{}` is listed twice", s.name) });
            }
            check_placement(&s.runs_on, &at("runs_on"))?;
            by_name.insert(s.name.clone(), s.clone());
        }
        for (i, s) in services.iter().enumerate() {
            for (j, dep) in s.depends_on.iter().enumerate() {
                if !by_name.contains_key(dep) {
                    return Err(Invalid {
                        at: format!("services[{i}].depends_on[{j}]"),
                        message: format!("`{}` depends on `{dep}`, which is not a listed service", s.name),
                    });
                }
                if dep == &s.name {
                    return Err(Invalid {
                        at: format!("services[{i}].depends_on[{j}]"),
                        message: format!("`{}` depends on itself", s.name),
                    });
                }
            }
        }
        if let Some(p) = &unlisted {
            if p.ec2.is_some() {
                return Err(Invalid {
                    at: "unlisted_services.ec2".into(),
                    message: "instances belong to one service: list them under that service".into(),
                });
            }
            check_placement(p, "unlisted_services")?;
        }
        let edges: Vec<(&str, &str)> =
            services.iter().flat_map(|s| s.depends_on.iter().map(|d| (s.name.as_str(), d.as_str()))).collect();
        Ok(Catalog { services: by_name, unlisted, graph: ServiceGraph::new(&edges) })
    }

    /// A catalogue of no services where every service runs as the Kubernetes
    /// Deployment of its name in `namespace`: the embedded defaults and the demo.
    pub fn every_service_in(namespace: &str) -> Catalog {
        Catalog::new(Vec::new(), Some(Placement::kubernetes_namespace(namespace)))
            .expect("a namespace alone is a valid placement")
    }

    /// The same catalogue with dependencies between services it does not list
    /// (the demo's simulated fleet).
    pub fn with_dependencies(mut self, edges: &[(&str, &str)]) -> Catalog {
        self.graph = ServiceGraph::new(edges);
        self
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn graph(&self) -> &ServiceGraph {
        &self.graph
    }

    /// Where `service`'s metrics come from, when its entry says.
    pub fn metrics_from(&self, service: &str) -> Option<MetricsFrom> {
        self.services.get(service).and_then(|s| s.metrics_from)
    }

    pub fn tier(&self, service: &str) -> Tier {
        self.services.get(service).map_or(Tier::Tier2, |s| s.tier)
    }

    /// The catalogued service a detection is about. A detector names its
    /// service; an alert's subject label may instead name a pod, a Deployment
    /// or a scrape job, so a listed service whose Kubernetes placement matches
    /// the alert's `namespace` and `deployment` (or the `pod` it owns) is
    /// preferred, then one named by `service`, `job` or `app`. `None` when no
    /// listed service matches.
    pub fn identify(&self, d: &Detection) -> Option<String> {
        if self.services.contains_key(&d.service) {
            return Some(d.service.clone());
        }
        let label = |k: &str| d.labels.get(k).map(String::as_str);
        if let Some(ns) = label("namespace") {
            for s in self.services.values() {
                let Some(k) = &s.runs_on.kubernetes else { continue };
                let deployment = k.deployment.as_deref().unwrap_or(&s.name);
                if k.namespace != ns {
                    continue;
                }
                let owns_pod = label("pod").is_some_and(|p| owned_pod(p, deployment));
                let named = ["deployment", "horizontalpodautoscaler"].iter().any(|l| label(l) == Some(deployment));
                let claim = label("persistentvolumeclaim").is_some_and(|c| k.claims.iter().any(|x| x == c));
                if owns_pod || named || claim {
                    return Some(s.name.clone());
                }
            }
        }
        // Never an unlisted name taken from a label: that would let a label
        // choose what an unlisted placement acts on.
        ["service", "job", "app"]
            .iter()
            .filter_map(|l| label(l))
            .find(|name| self.services.contains_key(*name))
            .map(|name| (*name).to_owned())
    }

    /// Where `service` runs: its listed placement with names filled in, or the
    /// unlisted services' placement; `None` when it may not be acted on.
    /// The tags a service's EC2 instances carry, when the catalogue gives
    /// them: an action on one of its instances carries them as
    /// [`REQUIRE_TAGS`] for the executor to check against AWS.
    pub fn ec2_tags(&self, service: &str) -> Option<BTreeMap<String, String>> {
        self.placement(service)?.ec2.map(|e| e.tags).filter(|t| !t.is_empty())
    }

    pub fn placement(&self, service: &str) -> Option<Placement> {
        let (placement, name) = match self.services.get(service) {
            Some(s) => (s.runs_on.clone(), s.name.as_str()),
            None => (self.unlisted.clone()?, service),
        };
        let mut p = placement;
        if let Some(k) = &mut p.kubernetes {
            k.deployment.get_or_insert_with(|| name.to_owned());
        }
        if let Some(e) = &mut p.ecs {
            e.service.get_or_insert_with(|| name.to_owned());
        }
        Some(p)
    }

    /// Fills a runbook target template for detection `d`'s service. The error
    /// names the placeholder the catalogue cannot fill.
    ///
    /// | placeholder | from |
    /// |---|---|
    /// | `{service}` | the service's name |
    /// | `{namespace}`, `{deployment}` | `runs_on.kubernetes` |
    /// | `{claim}` | `runs_on.kubernetes.claims`: the one listed, or the listed one the alert's `persistentvolumeclaim` label names |
    /// | `{cluster}`, `{ecs_service}` | `runs_on.ecs` |
    /// | `{region}`, `{instance}` | `runs_on.ec2`: the one instance listed, or the listed one the alert's `instance` label names; for a service placed by `tags`, the instance id its `instance_id` (or `instance`) label names, which the executor acts on only if AWS shows it carries the tags |
    /// | `{node}` | the alert's `node` label (a node is not a service; the executor checks it exists and the guardrails bound how many are cordoned) |
    pub fn target(&self, template: &str, d: &Detection) -> Result<String, String> {
        let placement = self.placement(&d.service);
        let missing = |what: &str| format!("`{}` has no {what} placement in the service catalogue", d.service);
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in target `{template}`"))? + open;
            let name = &rest[open + 1..close];
            let kube = || placement.as_ref().and_then(|p| p.kubernetes.as_ref()).ok_or_else(|| missing("kubernetes"));
            let ecs = || placement.as_ref().and_then(|p| p.ecs.as_ref()).ok_or_else(|| missing("ecs"));
            let ec2 = || placement.as_ref().and_then(|p| p.ec2.as_ref()).ok_or_else(|| missing("ec2"));
            let value = match name {
                "service" => d.service.clone(),
                "namespace" => kube()?.namespace.clone(),
                "deployment" => kube()?.deployment.clone().unwrap_or_else(|| d.service.clone()),
                "cluster" => ecs()?.cluster.clone(),
                "ecs_service" => ecs()?.service.clone().unwrap_or_else(|| d.service.clone()),
                "region" => ec2()?.region.clone(),
                "instance" => {
                    let ec2 = ec2()?;
                    let listed = &ec2.instance_ids;
                    let named_id = || {
                        d.labels.get("instance_id").or(d.labels.get("instance")).filter(|id| looks_like_instance(id))
                    };
                    match d.labels.get("instance") {
                        Some(named) if listed.contains(named) => named.clone(),
                        _ if listed.len() == 1 => listed[0].clone(),
                        _ if listed.is_empty() => named_id().cloned().ok_or_else(|| {
                            format!(
                                "`{}` runs on instances tagged {:?} and the detection names no instance id                                  (an `instance_id` label)",
                                d.service, ec2.tags
                            )
                        })?,
                        _ => {
                            return Err(format!(
                                "`{}` lists {} instances and the detection names none of them",
                                d.service,
                                listed.len()
                            ))
                        }
                    }
                }
                "claim" => {
                    let listed = &kube()?.claims;
                    match d.labels.get("persistentvolumeclaim") {
                        Some(named) if listed.contains(named) => named.clone(),
                        _ if listed.len() == 1 => listed[0].clone(),
                        _ => {
                            return Err(format!(
                                "`{}` lists {} claims and the detection names none of them",
                                d.service,
                                listed.len()
                            ))
                        }
                    }
                }
                "node" => d.labels.get("node").cloned().ok_or_else(|| "the detection names no node".to_owned())?,
                other => return Err(format!("unknown placeholder `{{{other}}}` in target `{template}`")),
            };
            if value.is_empty() || value.contains('/') {
                return Err(format!("`{{{name}}}` would be `{value}`, which is not a target name"));
            }
            out.push_str(&value);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A pod named after its Deployment: `DEPLOYMENT-<replicaset hash>-<pod suffix>`.
fn owned_pod(pod: &str, deployment: &str) -> bool {
    deployment_of_pod(pod) == Some(deployment)
}

/// The Deployment a ReplicaSet pod belongs to, from its name:
/// `checkout-7d9f8b6c5-x2x9q` → `checkout`.
pub fn deployment_of_pod(pod: &str) -> Option<&str> {
    let (rest, suffix) = pod.rsplit_once('-')?;
    let (deployment, hash) = rest.rsplit_once('-')?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    (ok(suffix) && ok(hash) && hash.len() >= 5 && !deployment.is_empty()).then_some(deployment)
}

fn check_placement(p: &Placement, at: &str) -> Result<(), Invalid> {
    let bad = |field: &str, message: &str| Err(Invalid { at: format!("{at}.{field}"), message: message.into() });
    let name_ok = |n: &str| !n.trim().is_empty() && !n.contains('/');
    if let Some(k) = &p.kubernetes {
        if !name_ok(&k.namespace) {
            return bad("kubernetes.namespace", "a namespace is a non-empty name without `/`");
        }
        if k.deployment.as_deref().is_some_and(|d| !name_ok(d)) {
            return bad("kubernetes.deployment", "a Deployment is a non-empty name without `/`");
        }
    }
    if let Some(e) = &p.ecs {
        if !name_ok(&e.cluster) {
            return bad("ecs.cluster", "a cluster is a non-empty name without `/`");
        }
        if e.service.as_deref().is_some_and(|s| !name_ok(s)) {
            return bad("ecs.service", "an ECS service is a non-empty name without `/`");
        }
    }
    if let Some(e) = &p.ec2 {
        if !name_ok(&e.region) {
            return bad("ec2.region", "a region is a non-empty name without `/`");
        }
        if e.instance_ids.is_empty() && e.tags.is_empty() {
            return bad("ec2", "list the service's instance_ids, or the tags its instances carry");
        }
        if let Some(i) = e.instance_ids.iter().position(|id| !looks_like_instance(id)) {
            return bad(&format!("ec2.instance_ids[{i}]"), "an instance id looks like `i-0123456789abcdef0`");
        }
        if let Some((k, _)) = e.tags.iter().find(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256) {
            return bad(&format!("ec2.tags.{k}"), "a tag key is 1 to 128 characters, its value at most 256");
        }
    }
    Ok(())
}

fn looks_like_instance(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Source;
    use engine::Timestamp;

    fn service(name: &str, deps: &[&str]) -> Service {
        Service {
            name: name.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            runs_on: Placement {
                kubernetes: Some(KubeWorkload { namespace: "shop".into(), ..KubeWorkload::default() }),
                ..Placement::default()
            },
            ..Service::default()
        }
    }

    fn detection(service: &str, labels: &[(&str, &str)]) -> Detection {
        Detection {
            service: service.into(),
            anomaly_type: "alert".into(),
            metric: "x".into(),
            observed: 1.0,
            baseline_mean: 0.0,
            baseline_stddev: 0.0,
            started_at: Timestamp(0),
            source: Source::Detector { detector: "t".into(), score: 1.0, reason: String::new() },
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn instances_placed_by_tags_are_named_by_the_alert_and_carry_the_tags() {
        let mut web = service("web", &[]);
        let tags = BTreeMap::from([("Service".to_owned(), "web".to_owned())]);
        web.runs_on.ec2 = Some(Ec2Instances { region: "eu-west-1".into(), tags: tags.clone(), ..Default::default() });
        let catalog = Catalog::new(vec![web], None).unwrap();
        let t = |labels: &[(&str, &str)]| catalog.target("ec2:{region}/{instance}", &detection("web", labels));
        assert_eq!(t(&[("instance_id", "i-0abc")]).unwrap(), "ec2:eu-west-1/i-0abc");
        assert_eq!(t(&[("instance", "i-0def")]).unwrap(), "ec2:eu-west-1/i-0def");
        assert!(t(&[("instance", "10.0.0.7:9100")]).unwrap_err().contains("no instance id"), "an address is no id");
        assert!(t(&[("instance_id", "i-0abc/../x")]).is_err());
        assert_eq!(catalog.ec2_tags("web"), Some(tags));
        assert_eq!(catalog.ec2_tags("ghost"), None);
        let mut neither = service("web", &[]);
        neither.runs_on.ec2 = Some(Ec2Instances { region: "eu-west-1".into(), ..Default::default() });
        assert_eq!(Catalog::new(vec![neither], None).unwrap_err().at, "services[0].runs_on.ec2");
    }

    #[test]
    fn targets_come_from_the_catalogue_not_from_labels() {
        let mut checkout = service("checkout", &["payments"]);
        checkout.runs_on.kubernetes.as_mut().unwrap().deployment = Some("checkout-web".into());
        checkout.runs_on.ecs = Some(EcsService { cluster: "prod".into(), service: None });
        checkout.runs_on.ec2 = Some(Ec2Instances {
            region: "eu-west-1".into(),
            instance_ids: vec!["i-1".into(), "i-2".into()],
            ..Default::default()
        });
        let catalog = Catalog::new(vec![checkout, service("payments", &[])], None).unwrap();
        let d = detection("checkout", &[("namespace", "attacker"), ("deployment", "other")]);
        assert_eq!(catalog.target("kubernetes:{namespace}/{deployment}", &d).unwrap(), "kubernetes:shop/checkout-web");
        assert_eq!(catalog.target("ecs:{cluster}/{ecs_service}", &d).unwrap(), "ecs:prod/checkout");
        assert!(catalog.target("ec2:{region}/{instance}", &d).unwrap_err().contains("2 instances"));
        let named = detection("checkout", &[("instance", "i-2")]);
        assert_eq!(catalog.target("ec2:{region}/{instance}", &named).unwrap(), "ec2:eu-west-1/i-2");
        let unknown = detection("checkout", &[("instance", "i-9")]);
        assert!(catalog.target("ec2:{region}/{instance}", &unknown).is_err(), "a label cannot add an instance");
        let payments = detection("payments", &[]);
        assert!(catalog.target("ecs:{cluster}/{ecs_service}", &payments).unwrap_err().contains("no ecs placement"));
        assert!(catalog.target("kubernetes:{namespace}/{deployment}", &detection("ghost", &[])).is_err());
        assert!(catalog.target("kubernetes:{nope}/x", &d).unwrap_err().contains("unknown placeholder"));
        assert_eq!(catalog.graph().upstream("checkout"), ["payments"]);
    }

    #[test]
    fn a_claim_comes_from_the_catalogue_and_an_alert_may_pick_among_the_listed() {
        let mut db = service("orders-db", &[]);
        db.runs_on.kubernetes.as_mut().unwrap().claims = vec!["data-0".into(), "data-1".into()];
        let catalog = Catalog::new(vec![db, service("cart", &[])], None).unwrap();
        let t =
            |labels: &[(&str, &str)]| catalog.target("kubernetes:{namespace}/{claim}", &detection("orders-db", labels));
        assert_eq!(t(&[("persistentvolumeclaim", "data-1")]).unwrap(), "kubernetes:shop/data-1");
        assert!(t(&[("persistentvolumeclaim", "other")]).is_err(), "a label adds no claim");
        assert!(t(&[]).unwrap_err().contains("2 claims"));
        let pv = detection("kubelet", &[("namespace", "shop"), ("persistentvolumeclaim", "data-0")]);
        assert_eq!(catalog.identify(&pv), Some("orders-db".into()), "the claim's owner is the service");
    }

    #[test]
    fn unlisted_services_run_where_the_catalogue_says_or_nowhere() {
        let catalog = Catalog::every_service_in("default");
        let d = detection("search", &[("namespace", "prod")]);
        assert_eq!(catalog.target("kubernetes:{namespace}/{deployment}", &d).unwrap(), "kubernetes:default/search");
        let strict = Catalog::new(vec![], None).unwrap();
        assert!(strict.target("kubernetes:{namespace}/{deployment}", &d).is_err());
    }

    #[test]
    fn an_alert_is_matched_to_the_service_owning_its_pod() {
        let catalog = Catalog::new(vec![service("checkout", &[]), service("cart", &[])], None).unwrap();
        let alert = |labels: &[(&str, &str)]| catalog.identify(&detection("kube-state-metrics", labels));
        assert_eq!(alert(&[("namespace", "shop"), ("pod", "checkout-7d9f8b6c5-x2x9q")]), Some("checkout".into()));
        assert_eq!(alert(&[("namespace", "shop"), ("deployment", "cart")]), Some("cart".into()));
        assert_eq!(alert(&[("namespace", "other"), ("pod", "checkout-7d9f8b6c5-x2x9q")]), None);
        assert_eq!(alert(&[("namespace", "shop"), ("pod", "checkout-canary")]), None);
        assert_eq!(alert(&[("job", "cart")]), Some("cart".into()));
        assert_eq!(catalog.identify(&detection("checkout", &[])), Some("checkout".into()));
        // Labels never name an unlisted service: they would choose its target.
        let defaults = Catalog::every_service_in("prod");
        let unlisted = defaults.identify(&detection("search", &[("namespace", "prod"), ("deployment", "payments")]));
        assert_eq!(unlisted, None);
    }

    #[test]
    fn a_dangling_dependency_or_a_bad_placement_names_where_it_is() {
        let err = Catalog::new(vec![service("a", &[]), service("b", &["a", "zz"])], None).unwrap_err();
        assert_eq!(err.at, "services[1].depends_on[1]");
        assert!(err.message.contains("zz"));
        let err = Catalog::new(vec![service("a", &[]), service("a", &[])], None).unwrap_err();
        assert_eq!(err.at, "services[1].name");
        let mut bad = service("a", &[]);
        bad.runs_on.ec2 =
            Some(Ec2Instances { region: "r".into(), instance_ids: vec!["web-1".into()], ..Default::default() });
        assert_eq!(Catalog::new(vec![bad], None).unwrap_err().at, "services[0].runs_on.ec2.instance_ids[0]");
    }
}
