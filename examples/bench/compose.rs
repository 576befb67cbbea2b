//! docker-compose on the Podman socket, when installed.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};

use crate::fleet::Fleet;
use crate::results::{Key, Results};
use crate::util::{remove_tagged, tag, three_passes};
use crate::{BENCH_LABEL, Bench, PORT, WORKER_TARGET};

/// `docker-compose`, else the `docker compose` plugin; never installed here.
pub(crate) fn find_compose() -> Option<Vec<String>> {
    let works = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        None
    }
}

pub(crate) fn compose_file(bench: &Bench, fleet: &Fleet, edited: u32) -> String {
    let mut out = String::from("services:\n");
    for (i, lane) in fleet.lanes.iter().enumerate() {
        let revision = if i == 0 { edited } else { 0 };
        let _ = write!(
            out,
            "  {lane}:\n    image: {image}\n    container_name: {name}\n    user: root\n\
             \x20   entrypoint: [{WORKER_TARGET}]\n    command: [serve]\n    working_dir: /workspace\n\
             \x20   labels: {{{BENCH_LABEL}: {tag}}}\n    stop_grace_period: 2s\n\
             \x20   ports: [\"127.0.0.1::{PORT}\"]\n    volumes:\n\
             \x20     - {worker}:{WORKER_TARGET}:ro,z\n      - {work}:/workspace:z\n\
             \x20     - {codex}:/root/.codex:ro,z\n    environment:\n",
            image = bench.image,
            name = fleet.container(lane),
            tag = fleet.tag,
            worker = bench.worker.display(),
            work = fleet.work_dir(lane).display(),
            codex = fleet.codex_dir(lane).display(),
        );
        for (k, v) in Fleet::env(lane, revision) {
            let _ = writeln!(out, "      {k}: \"{v}\"");
        }
    }
    out
}

pub(crate) async fn compose(bench: &Bench, fleet: &Fleet, args: &[&str]) -> Result<()> {
    let cmd = bench
        .compose
        .as_ref()
        .context("no docker-compose binary was found")?;
    let file = fleet.root.path().join("compose.yaml");
    // docker-compose 1.29 can hang for good on Podman's socket (seen with
    // 100 services: every thread waiting): a call that takes this long is a
    // failed measurement, and the process is killed.
    let limit = Duration::from_secs(60 + 2 * fleet.lanes.len() as u64);
    let run = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("-p")
        .arg(&fleet.tag)
        .arg("-f")
        .arg(&file)
        .args(args)
        .env("DOCKER_HOST", &bench.url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, run).await.map_err(|_| {
        anyhow!(
            "{} {}: no answer in {limit:?}",
            cmd.join(" "),
            args.join(" ")
        )
    })??;
    ensure!(
        out.status.success(),
        "{} {}: {}",
        cmd.join(" "),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `up -d` with lane 0 at `edited`, then every endpoint probed.
pub(crate) async fn compose_up(bench: &Bench, fleet: &Fleet, edited: u32) -> Result<()> {
    std::fs::write(
        fleet.root.path().join("compose.yaml"),
        compose_file(bench, fleet, edited),
    )?;
    compose(bench, fleet, &["up", "-d"]).await?;
    fleet.probe_all(&bench.api, "compose").await
}

pub(crate) async fn measure_compose(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("dc", n, run), n)?;
    let keys = [Key::ComposeCold, Key::ComposeNoop, Key::ComposeEdit];
    let outcome = three_passes(res, n, keys, |edited| compose_up(bench, &fleet, edited)).await;
    let down = compose(bench, &fleet, &["down", "-t", "1"]).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome.and(down)
}
