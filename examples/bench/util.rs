//! Helpers every measurement uses: timing, the probe, the bench's own container listing and removal.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use futures_util::{StreamExt, TryStreamExt, stream};
use podman_api::Podman;
use podman_api::opts::{ContainerDeleteOpts, ContainerListFilter, ContainerListOpts};

use crate::results::{Key, Results};
use crate::{BENCH_LABEL, JOBS, MEASUREMENT_LIMIT, PORT, PROBE_BUDGET, PROBE_INTERVAL, PROBE_PATH};

/// A peer's three timed passes over a fleet: cold, the same again (no-op),
/// and with lane 0 at revision 1 (one edit); `pass(r)` makes one pass with
/// lane 0 at revision `r`. Samples are kept only when all three succeed.
pub(crate) async fn three_passes<F, Fut>(
    res: &mut Results,
    n: usize,
    keys: [Key; 3],
    pass: F,
) -> Result<()>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut took = Vec::new();
    for revision in [0, 0, 1] {
        took.push(timed(pass(revision)).await?.1);
    }
    for (key, t) in keys.into_iter().zip(took) {
        res.add_time(n, key, t);
    }
    Ok(())
}

pub(crate) async fn timed<T>(
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = tokio::time::timeout(MEASUREMENT_LIMIT, work)
        .await
        .map_err(|_| anyhow!("gave up after {MEASUREMENT_LIMIT:?}"))??;
    Ok((value, start.elapsed()))
}

/// GETs `http://127.0.0.1:<port><path>` until a 2xx answer, with lanectl's
/// own probe (the same client every lane's readiness is decided by).
pub(crate) async fn probe(port: u16) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    lanectl::probe::wait_ready(addr, PROBE_PATH, PROBE_BUDGET, PROBE_INTERVAL)
        .await
        .map_err(|e| anyhow!(e))
}

pub(crate) fn list_opts(filter: ContainerListFilter) -> ContainerListOpts {
    ContainerListOpts::builder()
        .all(true)
        .filter([filter])
        .build()
}

/// The host port published for the worker's port, from a list entry.
pub(crate) fn listed_port(c: &podman_api::models::ListContainer) -> Option<u16> {
    c.ports
        .as_ref()?
        .iter()
        .find(|p| p.container_port == Some(PORT))?
        .host_port
}

/// Removes every container carrying `lanectl-bench=<tag>`, 8 at a time.
pub(crate) async fn remove_tagged(api: &Podman, tag: &str) -> Result<()> {
    let filter = ContainerListFilter::LabelKeyVal(BENCH_LABEL.into(), tag.into());
    let found = api.containers().list(&list_opts(filter)).await?;
    remove_all(api, found.into_iter().filter_map(|c| c.id).collect()).await
}

pub(crate) async fn remove_all(api: &Podman, ids: Vec<String>) -> Result<()> {
    let force = ContainerDeleteOpts::builder().force(true).build();
    stream::iter(ids)
        .map(|id| {
            let force = &force;
            async move { api.containers().get(&id).delete(force).await }
        })
        .buffer_unordered(JOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Removes whatever this process left behind (its tags start with `b<pid>-`).
pub(crate) async fn remove_leftovers(api: &Podman) -> Result<()> {
    let prefix = format!("b{}-", std::process::id());
    let found = api
        .containers()
        .list(&list_opts(ContainerListFilter::LabelKey(
            BENCH_LABEL.into(),
        )))
        .await?;
    let ours = found
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(BENCH_LABEL))
                .is_some_and(|v| v.starts_with(&prefix))
        })
        .filter_map(|c| c.id)
        .collect();
    remove_all(api, ours).await
}

pub(crate) fn tag(kind: &str, n: usize, run: usize) -> String {
    format!("b{}-{kind}{n}r{run}", std::process::id())
}
