//! The metrics `serin-mesh` exposes, named and labelled as Linkerd's proxy does.
//!
//! Inbound (as the destination pods' proxies report them):
//!
//! ```text
//! response_total{direction="inbound",namespace,deployment,classification,status_code}
//! response_latency_ms_bucket{direction="inbound",namespace,deployment,le}   (+ _sum, _count)
//! ```
//!
//! Outbound (as the client deployment's proxy reports them):
//!
//! ```text
//! response_total{direction="outbound",namespace,deployment,dst_namespace,dst_deployment,classification,status_code}
//! response_latency_ms_bucket{direction="outbound",namespace,deployment,dst_namespace,dst_deployment,le}
//! ```
//!
//! `classification` is `failure` for a 5xx and for a transport error or timeout, `success`
//! otherwise (Linkerd's default classifier). A request that got no HTTP response is counted
//! only outbound, with the status the client's proxy would synthesize: `504` for a timeout,
//! `502` for any other transport error; the destination's proxy never answered it, so there is
//! no inbound sample. Latency buckets are Linkerd's, in milliseconds.
//!
//! The stand-in's own gauges and counters are prefixed `serin_mesh_` (see [`MeshMetrics`]).
//!
//! `serin-mesh` holds one lock around every update, every weight change and every scrape, so a
//! scrape is a consistent snapshot: the histogram counts equal the `response_total` counts, and
//! every request chosen before a weight change is either counted or in `serin_mesh_in_flight`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Linkerd's `response_latency_ms` bucket bounds (ms); `+Inf` follows.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0,
    3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// A label set, in exposition order.
pub type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

/// How a request ended, as the outbound proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The destination answered with this status.
    Response(u16),
    /// The per-request timeout expired first (the client's proxy answers 504).
    Timeout,
    /// Connecting or reading failed (the client's proxy answers 502).
    TransportError,
}

impl Outcome {
    /// The status code the client sees.
    pub fn status_code(self) -> u16 {
        match self {
            Outcome::Response(status) => status,
            Outcome::Timeout => 504,
            Outcome::TransportError => 502,
        }
    }

    /// Linkerd's default classification.
    pub fn classification(self) -> &'static str {
        match self {
            Outcome::Response(status) if status < 500 => "success",
            _ => "failure",
        }
    }
}

/// The registry and its metric families.
pub struct MeshMetrics {
    registry: Registry,
    namespace: String,
    client_deployment: String,
    responses: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    weights: Family<Labels, Gauge>,
    skipped: Family<Labels, Counter>,
}

impl MeshMetrics {
    /// Metrics for traffic from `client_deployment` to workloads, all in `namespace`.
    pub fn new(namespace: &str, client_deployment: &str) -> Self {
        let mut registry = Registry::default();
        let responses = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let weights = Family::<Labels, Gauge>::default();
        let skipped = Family::<Labels, Counter>::default();
        registry.register("response", "Total count of HTTP responses", responses.clone());
        registry.register(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response stream completing",
            latency.clone(),
        );
        registry.register(
            "serin_mesh_in_flight",
            "Requests sent and not yet answered, timed out or failed",
            in_flight.clone(),
        );
        registry.register(
            "serin_mesh_backend_weight_milli",
            "Each backend's share of the TrafficSplit the mesh routes by, in thousandths; absent while there is none",
            weights.clone(),
        );
        registry.register(
            "serin_mesh_skipped",
            "Arrivals not sent: no-trafficsplit, unknown-backend (not given with --backend) or overload (--max-in-flight reached)",
            skipped.clone(),
        );
        MeshMetrics {
            registry,
            namespace: namespace.to_string(),
            client_deployment: client_deployment.to_string(),
            responses,
            latency,
            in_flight,
            weights,
            skipped,
        }
    }

    /// Counts a finished request to `deployment`, on both sides, and takes it off in-flight.
    pub fn record(&self, deployment: &str, outcome: Outcome, latency_ms: f64) {
        let ns = &self.namespace;
        let classification = outcome.classification().to_string();
        let status = outcome.status_code().to_string();
        let outbound: Labels = vec![
            ("direction", "outbound".to_string()),
            ("namespace", ns.clone()),
            ("deployment", self.client_deployment.clone()),
            ("dst_namespace", ns.clone()),
            ("dst_deployment", deployment.to_string()),
        ];
        self.latency.get_or_create(&outbound).observe(latency_ms);
        let mut outbound = outbound;
        outbound.push(("classification", classification.clone()));
        outbound.push(("status_code", status.clone()));
        self.responses.get_or_create(&outbound).inc();
        if matches!(outcome, Outcome::Response(_)) {
            let inbound: Labels = vec![
                ("direction", "inbound".to_string()),
                ("namespace", ns.clone()),
                ("deployment", deployment.to_string()),
            ];
            self.latency.get_or_create(&inbound).observe(latency_ms);
            let mut inbound = inbound;
            inbound.push(("classification", classification));
            inbound.push(("status_code", status));
            self.responses.get_or_create(&inbound).inc();
        }
        self.in_flight.dec();
    }

    /// A request was sent.
    pub fn sent(&self) {
        self.in_flight.inc();
    }

    /// An arrival was not sent, for `reason`.
    pub fn skipped(&self, reason: &'static str) {
        self.skipped.get_or_create(&vec![("reason", reason.to_string())]).inc();
    }

    /// The weights now routed by (thousandths), or none.
    pub fn set_weights(&self, weights: Option<&[(String, i64)]>) {
        self.weights.clear();
        for (service, milli) in weights.unwrap_or_default() {
            self.weights.get_or_create(&vec![("service", service.clone())]).set(*milli);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::scrape::Scrape;

    #[test]
    fn exposition_has_linkerd_names_labels_and_buckets() {
        let m = MeshMetrics::new("shop", "loadgen");
        m.sent();
        m.record("web", Outcome::Response(200), 3.5);
        m.sent();
        m.record("web", Outcome::Response(503), 12.0);
        m.sent();
        m.record("web", Outcome::Timeout, 5000.0);
        let text = m.encode();
        let s = Scrape::parse(&text).unwrap();
        let inbound = [("direction", "inbound"), ("deployment", "web")];
        assert_eq!(s.sum("response_total", &inbound), 2.0, "{text}");
        assert_eq!(s.sum("response_total", &[("direction", "inbound"), ("classification", "failure")]), 1.0);
        assert_eq!(s.sum("response_total", &[("direction", "outbound"), ("classification", "failure")]), 2.0);
        assert_eq!(s.sum("response_total", &[("direction", "outbound"), ("status_code", "504")]), 1.0);
        assert_eq!(s.sum("response_latency_ms_count", &inbound), 2.0);
        assert_eq!(s.sum("response_latency_ms_sum", &inbound), 15.5);
        assert_eq!(s.sum("response_latency_ms_bucket", &[("direction", "inbound"), ("le", "4.0")]), 1.0);
        assert_eq!(s.sum("response_latency_ms_bucket", &[("direction", "inbound"), ("le", "+Inf")]), 2.0);
        let les: Vec<_> = s
            .samples("response_latency_ms_bucket")
            .filter(|x| x.labels["direction"] == "inbound")
            .map(|x| x.labels["le"].parse::<f64>().unwrap())
            .collect();
        let mut expected = LATENCY_BUCKETS_MS.to_vec();
        expected.push(f64::INFINITY);
        assert_eq!(les, expected);
        let keys = |name: &str, direction: &str| -> Vec<Vec<String>> {
            let mut k: Vec<Vec<String>> = s
                .samples(name)
                .filter(|x| x.labels["direction"] == direction)
                .map(|x| x.labels.keys().cloned().collect())
                .collect();
            k.dedup();
            k
        };
        assert_eq!(
            keys("response_total", "outbound"),
            vec![vec![
                "classification",
                "deployment",
                "direction",
                "dst_deployment",
                "dst_namespace",
                "namespace",
                "status_code"
            ]]
        );
        assert_eq!(
            keys("response_latency_ms_count", "inbound"),
            vec![vec!["deployment", "direction", "namespace"]]
        );
        assert_eq!(s.sum("serin_mesh_in_flight", &[]), 0.0);
    }

    #[test]
    fn weights_gauge_follows_the_split() {
        let m = MeshMetrics::new("shop", "loadgen");
        m.set_weights(Some(&[("a".into(), 800), ("b".into(), 200)]));
        let s = Scrape::parse(&m.encode()).unwrap();
        assert_eq!(s.sum("serin_mesh_backend_weight_milli", &[("service", "b")]), 200.0);
        m.set_weights(None);
        let s = Scrape::parse(&m.encode()).unwrap();
        assert_eq!(s.samples("serin_mesh_backend_weight_milli").count(), 0);
    }
}
