//! The Go runtime's CLI sequence: `podman --remote` calls per lane, lanes one after another.

use std::process::Stdio;

use anyhow::{Context, Result};
use anyhow::{anyhow, bail, ensure};
use serde_json::Value;

use crate::fleet::{Fleet, fingerprint};
use crate::results::{Key, Results};
use crate::util::{probe, remove_tagged, tag, three_passes};
use crate::{BENCH_LABEL, Bench, PORT, WORKER_TARGET};

/// `podman --remote --url <url> args...`: (success, stdout, stderr).
pub(crate) async fn podman_cli(bench: &Bench, args: &[&str]) -> Result<(bool, String, String)> {
    let out = tokio::process::Command::new("podman")
        .args(["--remote", "--url", &bench.url])
        .args(args)
        .env_remove("CONTAINER_HOST")
        .stdin(Stdio::null())
        .output()
        .await
        .context("run the podman CLI")?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
}

pub(crate) async fn podman_ok(bench: &Bench, args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = podman_cli(bench, args).await?;
    ensure!(ok, "podman {}: {}", args.join(" "), stderr.trim());
    Ok(stdout)
}

/// `ensureLaneContainer` of the Go runtime, call for call. `revision` is the
/// env the lane wants: another one in the inspect output is what its
/// `laneDrifted()` finds after an edit.
pub(crate) async fn go_ensure_lane(
    bench: &Bench,
    fleet: &Fleet,
    lane: &str,
    revision: u32,
) -> Result<()> {
    let name = fleet.container(lane);
    podman_ok(bench, &["image", "exists", &bench.image]).await?;
    let fp = fingerprint(&fleet.codex_dir(lane))?;
    let mut found = go_inspect(bench, &name).await?;
    if let Some(info) = &found {
        let want = format!("BENCH_REVISION={revision}");
        let env = &info["Config"]["Env"];
        let drifted = !env
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v.as_str() == Some(&want)));
        if drifted {
            podman_ok(bench, &["rm", "-f", &name]).await?;
            found = None;
        }
    }
    let info = match found {
        Some(info) => info,
        None => {
            let mut args: Vec<String> = [
                "create",
                "--name",
                &name,
                "--user",
                "root",
                "--entrypoint",
                WORKER_TARGET,
                "-p",
                &format!("127.0.0.1::{PORT}"),
            ]
            .map(String::from)
            .to_vec();
            let mut env = Fleet::env(lane, revision);
            env.insert("INBOX_RUNTIME_CODEX_SHA".into(), fp);
            for (k, v) in env {
                args.extend(["-e".into(), format!("{k}={v}")]);
            }
            let work = fleet.work_dir(lane);
            let worker = &bench.worker;
            args.extend([
                "-v".into(),
                format!("{}:/workspace:z", work.display()),
                "-v".into(),
                format!("{}:{WORKER_TARGET}:z,ro", worker.display()),
                "-w".into(),
                "/workspace".into(),
                "--label".into(),
                format!("{BENCH_LABEL}={}", fleet.tag),
                bench.image.clone(),
                "serve".into(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            podman_ok(bench, &args).await?;
            let codex = fleet.codex_dir(lane).display().to_string();
            podman_ok(bench, &["cp", &codex, &format!("{name}:/root/.codex")]).await?;
            go_inspect(bench, &name)
                .await?
                .ok_or_else(|| anyhow!("container {name} was not created"))?
        }
    };
    if info["State"]["Running"] != Value::Bool(true) {
        podman_ok(bench, &["start", &name]).await?;
    }
    let port = podman_ok(bench, &["port", &name, &format!("{PORT}/tcp")]).await?;
    let port = port
        .lines()
        .next()
        .and_then(|l| l.trim().rsplit(':').next()?.parse().ok())
        .ok_or_else(|| anyhow!("podman port {name}: {port:?}"))?;
    probe(port).await
}

pub(crate) async fn go_inspect(bench: &Bench, name: &str) -> Result<Option<Value>> {
    let (ok, stdout, stderr) = podman_cli(bench, &["inspect", name]).await?;
    if !ok {
        if stderr.contains("no such object") || stderr.contains("no container with name or ID") {
            return Ok(None);
        }
        bail!("podman inspect {name}: {}", stderr.trim());
    }
    let items: Vec<Value> = serde_json::from_str(&stdout)?;
    Ok(items.into_iter().next())
}

/// Every lane, one after another, as the Go runtime did; lane 0 at `edited`.
/// A start refused because Podman handed the random host port out twice is
/// retried on a new container (the Go runtime would fail the lane; lanectl
/// does the same retry).
pub(crate) async fn go_pass(bench: &Bench, fleet: &Fleet, edited: u32) -> Result<()> {
    for (i, lane) in fleet.lanes.iter().enumerate() {
        let revision = if i == 0 { edited } else { 0 };
        let mut attempt = 1;
        while let Err(e) = go_ensure_lane(bench, fleet, lane, revision).await {
            if attempt == 3 || !e.to_string().contains("address already in use") {
                return Err(e);
            }
            podman_ok(bench, &["rm", "-f", &fleet.container(lane)]).await?;
            attempt += 1;
        }
    }
    Ok(())
}

pub(crate) async fn measure_go(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("go", n, run), n)?;
    let keys = [Key::GoCold, Key::GoNoop, Key::GoEdit];
    let outcome = three_passes(res, n, keys, |edited| go_pass(bench, &fleet, edited)).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}
