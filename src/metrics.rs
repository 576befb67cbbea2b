//! Prometheus metrics of `run --metrics ADDR` (SPEC.md "Operating"), through
//! `prometheus-client`, the official Rust client, and a `/healthz`. Label
//! values are lane names, phases, reasons and operation names only: their
//! number is bounded by the lanes', and no env value, label value or codex
//! byte can reach one. Without `--metrics` every record is a no-op.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lock::lock;
use crate::status::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LanePhase {
    lane: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Recreate {
    lane: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric, and what `/healthz` says.
pub struct Metrics {
    registry: Registry,
    phase: Family<LanePhase, Gauge>,
    restarts: Family<LaneLabel, Counter>,
    recreates: Family<Recreate, Counter>,
    reconcile: Family<Result_, Histogram, fn() -> Histogram>,
    podman: Family<Operation, Histogram, fn() -> Histogram>,
    queue_depth: Gauge,
    last_resync: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Each lane's phase and restarts as last recorded.
    lanes: Mutex<std::collections::BTreeMap<String, (Phase, u32)>>,
    /// `None`: healthy; else why not.
    unhealthy: Mutex<Option<String>>,
}

static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();

/// The metrics, made (once) when `--metrics` is given.
pub fn enable() -> Arc<Metrics> {
    METRICS.get_or_init(|| Arc::new(Metrics::new())).clone()
}

fn get() -> Option<&'static Arc<Metrics>> {
    METRICS.get()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let phase = Family::<LanePhase, Gauge>::default();
        registry.register(
            "lanectl_lane_phase",
            "1 for each lane's current phase",
            phase.clone(),
        );
        let restarts = Family::<LaneLabel, Counter>::default();
        registry.register(
            "lanectl_lane_restarts",
            "Starts of a lane's container after exits lanectl did not cause",
            restarts.clone(),
        );
        let recreates = Family::<Recreate, Counter>::default();
        registry.register(
            "lanectl_recreates",
            "Recreates by lane and reason (spec, image, codex, tracked, half-made, rollout-failed)",
            recreates.clone(),
        );
        let reconcile =
            Family::<Result_, Histogram, fn() -> Histogram>::new_with_constructor(seconds);
        registry.register(
            "lanectl_reconcile_duration_seconds",
            "One lane's reconcile, by result (ok, failed)",
            reconcile.clone(),
        );
        let podman =
            Family::<Operation, Histogram, fn() -> Histogram>::new_with_constructor(seconds);
        registry.register(
            "lanectl_podman_request_duration_seconds",
            "Podman API requests by operation",
            podman.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "lanectl_queue_depth",
            "Lanes waiting in the queue",
            queue_depth.clone(),
        );
        let last_resync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "lanectl_last_full_resync_timestamp_seconds",
            "When the last full list of the containers succeeded (unix seconds)",
            last_resync.clone(),
        );
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("lanectl_build_info", "lanectl's version", build);
        Metrics {
            registry,
            phase,
            restarts,
            recreates,
            reconcile,
            podman,
            queue_depth,
            last_resync,
            lanes: Mutex::default(),
            unhealthy: Mutex::new(Some("the first full list has not answered yet".into())),
        }
    }

    /// The exposition text.
    pub fn encode(&self, queue_depth: i64) -> String {
        self.queue_depth.set(queue_depth);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// `None` while healthy, else why not.
    pub fn health(&self) -> Option<String> {
        lock(&self.unhealthy).clone()
    }
}

/// How one lane's reconcile ended, as the metrics count it.
#[derive(Debug, Clone)]
pub struct LaneEnd<'a> {
    pub lane: &'a str,
    /// `None`: the lane is gone (its manifest was deleted).
    pub phase: Option<Phase>,
    pub restarts: u32,
    /// Why its container was recreated, if it was: spec, image, codex,
    /// tracked, half-made, rollout-failed.
    pub recreated: Option<&'static str>,
}

/// A lane's reconcile ended (the daemon). The adapter side (Podman request
/// timings) needs nothing of the reconcile: the daemon says it in these terms.
pub fn lane(end: &LaneEnd<'_>) {
    let Some(m) = get() else { return };
    let name = end.lane.to_string();
    let mut lanes = lock(&m.lanes);
    let was = lanes.get(&name).copied();
    let phase_of = |p: Phase| LanePhase {
        lane: name.clone(),
        phase: p.to_string(),
    };
    let Some(phase) = end.phase else {
        if let Some((p, _)) = lanes.remove(&name) {
            m.phase.remove(&phase_of(p));
        }
        return;
    };
    if let Some((p, _)) = was.filter(|(p, _)| *p != phase) {
        m.phase.remove(&phase_of(p));
    }
    m.phase.get_or_create(&phase_of(phase)).set(1);
    let before = was.map_or(0, |(_, r)| r);
    if end.restarts > before {
        m.restarts
            .get_or_create(&LaneLabel { lane: name.clone() })
            .inc_by(u64::from(end.restarts - before));
    }
    lanes.insert(name.clone(), (phase, end.restarts));
    if let Some(reason) = end.recreated {
        m.recreates
            .get_or_create(&Recreate {
                lane: name,
                reason: reason.into(),
            })
            .inc();
    }
}

/// How long one lane's reconcile took, and whether it failed.
pub fn reconciled(took: Duration, failed: bool) {
    if let Some(m) = get() {
        let result = if failed { "failed" } else { "ok" };
        m.reconcile
            .get_or_create(&Result_ {
                result: result.into(),
            })
            .observe(took.as_secs_f64());
    }
}

/// How long a Podman request took.
pub fn podman_request(operation: &'static str, took: Duration) {
    if let Some(m) = get() {
        m.podman
            .get_or_create(&Operation {
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }
}

/// A full list of the containers answered (`Ok`) or not (`Err`, why).
pub fn full_list(result: Result<(), String>) {
    let Some(m) = get() else { return };
    match result {
        Ok(()) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            m.last_resync.set(now);
            *lock(&m.unhealthy) = None;
        }
        Err(why) => {
            *lock(&m.unhealthy) = Some(format!("podman did not answer the last full list: {why}"));
        }
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `stop`; `depth` reads
/// the queue's depth at each scrape.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    depth: Arc<dyn Fn() -> i64 + Send + Sync>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    use hyper::service::{make_service_fn, service_fn};
    use hyper::{Body, Request, Response, StatusCode};
    let make = make_service_fn(move |_| {
        let (metrics, depth) = (metrics.clone(), depth.clone());
        async move {
            Ok::<_, std::convert::Infallible>(service_fn(move |req: Request<Body>| {
                let (metrics, depth) = (metrics.clone(), depth.clone());
                async move {
                    let answer = |status: StatusCode, kind: &str, body: String| {
                        let mut r = Response::new(Body::from(body));
                        *r.status_mut() = status;
                        if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
                            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        r
                    };
                    let text = "text/plain; charset=utf-8";
                    Ok::<_, std::convert::Infallible>(match req.uri().path() {
                        "/metrics" => answer(
                            StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            metrics.encode(depth()),
                        ),
                        "/healthz" => match metrics.health() {
                            None => answer(StatusCode::OK, text, "ok\n".into()),
                            Some(why) => {
                                answer(StatusCode::SERVICE_UNAVAILABLE, text, format!("{why}\n"))
                            }
                        },
                        _ => answer(StatusCode::NOT_FOUND, text, "not found\n".into()),
                    })
                }
            }))
        }
    });
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    hyper::Server::from_tcp(listener)
        .map_err(|e| e.to_string())?
        .serve(make)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(|e| e.to_string())
}
