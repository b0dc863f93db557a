//! A small simulated fleet: six services with realistic baselines, daily
//! seasonality and noise, a dependency graph, and faults that can be injected
//! and fixed. One simulated minute passes per tick.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One metric of one service: its normal level and how much it swings.
#[derive(Clone, Debug)]
pub struct Signal {
    pub service: &'static str,
    pub metric: &'static str,
    pub base: f64,
    /// Daily swing as a fraction of `base` (peak mid-afternoon).
    pub seasonality: f64,
    /// Noise standard deviation as a fraction of `base`.
    pub noise: f64,
}

pub const SERVICES: [&str; 6] = ["frontend", "checkout", "payments", "orders", "inventory", "billing-consumer"];

/// Who calls whom: `a → b` means `a` depends on `b`.
pub const DEPENDENCIES: [(&str, &str); 6] = [
    ("frontend", "checkout"),
    ("frontend", "inventory"),
    ("checkout", "payments"),
    ("checkout", "orders"),
    ("orders", "inventory"),
    ("billing-consumer", "orders"),
];

/// The simulated fleet's service catalogue: every service a Deployment of its
/// name in `prod`, the customer-facing ones tier 1.
pub fn catalog() -> nodes::catalog::Catalog {
    use nodes::catalog::{Catalog, Placement, Service};
    use nodes::incident::Tier;
    let services = SERVICES
        .iter()
        .map(|name| Service {
            name: (*name).to_owned(),
            tier: match *name {
                "frontend" | "checkout" | "payments" => Tier::Tier1,
                "billing-consumer" => Tier::Tier3,
                _ => Tier::Tier2,
            },
            owners: vec!["demo".to_owned()],
            depends_on: DEPENDENCIES.iter().filter(|(a, _)| a == name).map(|(_, b)| (*b).to_owned()).collect(),
            runs_on: Placement::kubernetes_namespace("prod"),
            ..Service::default()
        })
        .collect();
    Catalog::new(services, None).expect("the demo's catalogue is valid")
}

/// The simulated cluster: the memory-leak scenario's pods were OOMKilled,
/// which is what its runbook's first step asks the cluster.
pub fn cluster() -> nodes::ports::MemoryCluster {
    let cluster = nodes::ports::MemoryCluster::default();
    cluster.set_workload(nodes::ports::WorkloadReport {
        namespace: "prod".into(),
        deployment: "payments".into(),
        pods: vec![executors::kubernetes::inspect::PodReport {
            name: "payments-6f7c9d8b4-q8w2d".into(),
            node: Some("node-a".into()),
            ready: true,
            restarts: 3,
            last_terminated: Some(("OOMKilled".into(), 137)),
            waiting: None,
        }],
        ..Default::default()
    });
    cluster
}

pub fn signals() -> Vec<Signal> {
    let mut v = Vec::new();
    let s = |service, metric, base, seasonality, noise| Signal { service, metric, base, seasonality, noise };
    for (service, p99) in
        [("frontend", 120.0), ("checkout", 180.0), ("payments", 250.0), ("orders", 90.0), ("inventory", 60.0)]
    {
        v.push(s(service, "http_p99_ms", p99, 0.15, 0.03));
        v.push(s(service, "error_rate", 0.5, 0.10, 0.04));
        v.push(s(service, "cpu_utilization", 0.45, 0.25, 0.02));
        v.push(s(service, "memory_mb", 900.0, 0.02, 0.005));
    }
    v.push(s("orders", "db_connections", 40.0, 0.20, 0.03));
    v.push(s("billing-consumer", "consumer_lag", 200.0, 0.20, 0.05));
    v.push(s("billing-consumer", "cpu_utilization", 0.35, 0.2, 0.02));
    v
}

/// A fault in progress: the metric reads `factor` × normal (or `factor`
/// added, for rates) until fixed; `growth` makes it worse each tick.
#[derive(Clone, Debug)]
pub struct Fault {
    pub factor: f64,
    pub growth: f64,
}

pub struct Fleet {
    signals: Vec<Signal>,
    faults: BTreeMap<(String, String), Fault>,
    rng: StdRng,
}

impl Fleet {
    pub fn new(seed: u64) -> Self {
        Fleet { signals: signals(), faults: BTreeMap::new(), rng: StdRng::seed_from_u64(seed) }
    }

    pub fn inject(&mut self, service: &str, metric: &str, fault: Fault) {
        self.faults.insert((service.to_owned(), metric.to_owned()), fault);
    }

    /// Ends every fault on `service`; returns how many there were.
    pub fn fix(&mut self, service: &str) -> usize {
        let before = self.faults.len();
        self.faults.retain(|(s, _), _| s != service);
        before - self.faults.len()
    }

    pub fn faulty(&self, service: &str) -> bool {
        self.faults.keys().any(|(s, _)| s == service)
    }

    /// Readings for one simulated minute of the day (`minute_of_day` in 0..1440).
    pub fn sample(&mut self, minute_of_day: u32) -> Vec<(&'static str, &'static str, f64)> {
        let phase = (f64::from(minute_of_day) / 1440.0 - 0.375) * std::f64::consts::TAU;
        let mut out = Vec::with_capacity(self.signals.len());
        for sig in &self.signals {
            let seasonal = sig.base * (1.0 + sig.seasonality * phase.sin());
            let noisy = seasonal + self.rng.gen_range(-1.0..1.0) * sig.noise * sig.base * 1.7;
            let key = (sig.service.to_owned(), sig.metric.to_owned());
            let value = match self.faults.get_mut(&key) {
                Some(f) => {
                    f.factor *= 1.0 + f.growth;
                    noisy * f.factor
                }
                None => noisy,
            };
            out.push((sig.service, sig.metric, value.max(0.0)));
        }
        out
    }
}
