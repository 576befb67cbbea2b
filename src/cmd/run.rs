//! `run`: the daemon, with signals. The first SIGINT/SIGTERM stops new work,
//! lets in-flight reconciles finish (no half-made container, no torn status
//! file) and exits 0 with every lane left running; a second exits at once.

use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::cli::Global;
use crate::content::Policy;
use crate::daemon::{self, Options};
use crate::podman::Podman;
use crate::reconcile::Ctx;

pub async fn run(
    global: &Global,
    resync: Duration,
    allow_prune_all: bool,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<super::Exit> {
    // Bound at once: a taken address is an error before anything else.
    let metrics = metrics
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot serve metrics on {addr}"))
        })
        .transpose()?;
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            info!("shutting down: finishing what is in flight (a second signal exits at once)");
            shutdown.cancel();
            // 128 + the signal's number, as a shell reports a death by it.
            let code = tokio::select! {
                _ = term.recv() => 128 + libc::SIGTERM,
                _ = int.recv() => 128 + libc::SIGINT,
            };
            warn!(code, "second signal: exiting now");
            std::process::exit(code);
        }
    });

    // As every command: a lanes directory that is not there at start is a
    // mistake to report (exit 1), not one to wait out. (One that goes away
    // later is waited for: the daemon never prunes for it.)
    if !global.dir.is_dir() {
        anyhow::bail!(
            "lanes directory {} does not exist or is not a directory",
            global.dir.display()
        );
    }
    let instance = super::instance(global)?;
    // Podman may come later than lanectl (boot order): wait for it.
    let mut waits = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).iter();
    let podman = loop {
        let wait = waits.next().unwrap_or(Duration::from_secs(30));
        match Podman::connect(global.podman.as_deref()).await {
            Ok(p) => break p,
            Err(e) => {
                warn!(error = %e, retry_in_s = wait.as_secs(), fix = super::NO_PODMAN_FIX, "podman is not reachable yet")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(super::Exit::Ok),
            () = tokio::time::sleep(wait) => {}
        }
    };
    info!(url = podman.url(), instance = %instance, "connected to podman");
    let ctx = Ctx::new(podman, super::dir_of(&global.dir), instance)
        .with_jobs(usize::from(global.jobs))
        .with_policy(Policy::of_process(global.allow_insecure_permissions))
        .with_change_lock(global.lock_wait)
        .logging_transitions();
    let opts = Options {
        resync,
        allow_prune_all,
        load: global.load_options(),
        metrics: metrics.map(std::sync::Arc::new),
    };
    daemon::run(std::sync::Arc::new(ctx), opts, shutdown).await?;
    info!("stopped; lanes keep running");
    Ok(super::Exit::Ok)
}
