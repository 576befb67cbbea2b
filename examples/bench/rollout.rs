//! Rollouts (issue 11): what a client sees while one lane is recreated, side
//! by side for lanectl stop-first, lanectl start-first and docker-compose.
//!
//! A poller finds the lane's endpoint afresh each time (lanectl: its status
//! file, as clients are told to; docker-compose: the container's published
//! port, asked of Podman) and GETs `/healthz` every 10 ms with lanectl's own
//! one-shot probe (1 s timeout). A request fails when it gets no 2xx answer;
//! the longest gap is the longest time between two answered requests. Each
//! is measured over `edits` edits of one env value (20; 3 with `--quick`).
//! Besides: for start-first, edit → the status file names the new container
//! and it answers ("serving"), and → `apply` returns with the old one gone
//! ("done", the drain of 500 ms included); for stop-first, the share of
//! recreates that kept the lane's host port.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use podman_api::Podman;

use crate::apply::lanectl_apply;
use crate::compose::{compose, compose_up};
use crate::fleet::Fleet;
use crate::results::{Key, Results};
use crate::util::{remove_tagged, tag};
use crate::{Bench, PORT, PROBE_PATH};

/// How often the poller asks.
const POLL: Duration = Duration::from_millis(10);
/// start-first's drain in this measurement.
const DRAIN: &str = "500ms";

/// Where the poller finds the endpoint.
#[derive(Clone)]
enum Endpoint {
    /// The lane's status file (lanes dir, lane).
    Status(PathBuf, String),
    /// The published port of a container (by name), asked of Podman.
    Container(Podman, String),
}

impl Endpoint {
    async fn addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Endpoint::Status(dir, lane) => {
                let status = lanectl::status::read(dir, lane)?;
                status.endpoint?.strip_prefix("http://")?.parse().ok()
            }
            Endpoint::Container(api, name) => {
                let data = api.containers().get(name).inspect().await.ok()?;
                let ports = data.network_settings?.ports?;
                let hosts = ports.get(&format!("{PORT}/tcp"))?.clone()?;
                let port: u16 = hosts.first()?.host_port.as_ref()?.parse().ok()?;
                Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            }
        }
    }
}

/// What the poller saw: requests answered and failed, the longest gap.
struct Seen {
    answered: u32,
    failed: u32,
    gap: Duration,
}

/// Polls `endpoint` until `stop`.
fn poll(endpoint: Endpoint, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen {
            answered: 0,
            failed: 0,
            gap: Duration::ZERO,
        };
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let ok = match endpoint.addr().await {
                Some(addr) => lanectl::probe::once(addr, PROBE_PATH).await,
                None => false,
            };
            if ok {
                seen.answered += 1;
                seen.gap = seen.gap.max(last.elapsed());
                last = Instant::now();
            } else {
                seen.failed += 1;
            }
            tokio::time::sleep(POLL).await;
        }
        seen.gap = seen.gap.max(last.elapsed());
        seen
    })
}

/// Runs `edit(r)` for r in 1..=edits under a poller; what it saw.
async fn under_poller<F, Fut>(endpoint: Endpoint, edits: u32, mut edit: F) -> Result<Seen>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll(endpoint, stop.clone());
    let mut outcome = Ok(());
    for r in 1..=edits {
        outcome = edit(r).await;
        if outcome.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = poller.await?;
    outcome.map(|()| seen)
}

/// The host port in a lane's status file.
fn status_port(fleet: &Fleet, lane: &str) -> Option<String> {
    let endpoint = fleet.status(lane)?.endpoint?;
    endpoint.rsplit(':').next().map(str::to_string)
}

pub(crate) async fn measure_rollouts(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
    edits: u32,
) -> Result<()> {
    let stop_first = stop_first(bench, res, n, run, edits).await;
    let start_first = start_first(bench, res, n, run, edits).await;
    let compose = match bench.compose {
        Some(_) if bench.runs("compose") => compose_rollout(bench, res, n, run, edits).await,
        _ => Ok(()),
    };
    stop_first.and(start_first).and(compose)
}

async fn stop_first(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
    edits: u32,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("rs", n, run), 1)?;
    let lane = fleet.lanes[0].clone();
    let outcome = async {
        lanectl_apply(bench, &fleet).await?;
        let endpoint = Endpoint::Status(fleet.dir(), lane.clone());
        let kept = std::cell::Cell::new(0u32);
        let seen = under_poller(endpoint, edits, |r| {
            let (fleet, lane, kept) = (&fleet, &lane, &kept);
            async move {
                let before = status_port(fleet, lane);
                fleet.write_manifest(bench, lane, r)?;
                lanectl_apply(bench, fleet).await?;
                if before.is_some() && status_port(fleet, lane) == before {
                    kept.set(kept.get() + 1);
                }
                Ok(())
            }
        })
        .await?;
        res.add(n, Key::RolloutStopFailed, f64::from(seen.failed));
        res.add_time(n, Key::RolloutStopGap, seen.gap);
        let kept = f64::from(kept.get());
        res.add(n, Key::RolloutStablePorts, 100.0 * kept / f64::from(edits));
        Ok(())
    }
    .await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}

async fn start_first(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
    edits: u32,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("rf", n, run), 1)?;
    let lane = fleet.lanes[0].clone();
    let update = format!("update: {{order: start-first, drain: {DRAIN}}}\n");
    let outcome = async {
        fleet.write_manifest_with(bench, &lane, 0, &update)?;
        lanectl_apply(bench, &fleet).await?;
        let endpoint = Endpoint::Status(fleet.dir(), lane.clone());
        let serving = std::cell::RefCell::new(Vec::new());
        let done = std::cell::RefCell::new(Vec::new());
        let seen = under_poller(endpoint, edits, |r| {
            let (fleet, lane, update) = (&fleet, &lane, &update);
            let (serving, done) = (&serving, &done);
            async move {
                let before = fleet.status(lane).and_then(|s| s.container_id);
                fleet.write_manifest_with(bench, lane, r, update)?;
                let clock = Instant::now();
                let watch = async {
                    loop {
                        let st = fleet.status(lane);
                        let switched = st.as_ref().is_some_and(|s| s.container_id != before);
                        if switched {
                            let addr = st
                                .and_then(|s| s.endpoint)
                                .and_then(|e| e.strip_prefix("http://")?.parse().ok());
                            if let Some(addr) = addr
                                && lanectl::probe::once(addr, PROBE_PATH).await
                            {
                                return clock.elapsed();
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                let (applied, served) = tokio::join!(
                    async {
                        let r = lanectl_apply(bench, fleet).await;
                        (r, clock.elapsed())
                    },
                    tokio::time::timeout(Duration::from_secs(60), watch)
                );
                applied.0?;
                let served = served
                    .map_err(|_| anyhow::anyhow!("the status never named the new container"))?;
                serving.borrow_mut().push(served);
                done.borrow_mut().push(applied.1);
                Ok(())
            }
        })
        .await?;
        res.add(n, Key::RolloutStartFailed, f64::from(seen.failed));
        res.add_time(n, Key::RolloutStartGap, seen.gap);
        for (s, d) in serving.into_inner().into_iter().zip(done.into_inner()) {
            res.add_time(n, Key::RolloutStartServing, s);
            res.add_time(n, Key::RolloutStartDone, d);
        }
        Ok(())
    }
    .await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}

async fn compose_rollout(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
    edits: u32,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("rc", n, run), 1)?;
    let outcome = async {
        compose_up(bench, &fleet, 0).await?;
        let name = fleet.container(&fleet.lanes[0]);
        let endpoint = Endpoint::Container(bench.api.clone(), name);
        ensure!(
            endpoint.addr().await.is_some(),
            "compose: no published port"
        );
        let seen = under_poller(endpoint, edits, |r| compose_up(bench, &fleet, r)).await?;
        res.add(n, Key::RolloutComposeFailed, f64::from(seen.failed));
        res.add_time(n, Key::RolloutComposeGap, seen.gap);
        Ok(())
    }
    .await;
    let down = compose(bench, &fleet, &["down", "-t", "1"]).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome.and(down)
}
