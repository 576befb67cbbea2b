//! lanectl apply: cold, no-op and one edit, one process per call.

use std::process::Stdio;

use anyhow::ensure;
use anyhow::{Context, Result};

use crate::fleet::Fleet;
use crate::results::{Key, Results};
use crate::util::{remove_tagged, tag, timed};
use crate::{Bench, JOBS};

pub(crate) async fn lanectl_apply(bench: &Bench, fleet: &Fleet) -> Result<()> {
    let out = tokio::process::Command::new(&bench.lanectl)
        .arg("--dir")
        .arg(fleet.dir())
        .args([
            "--instance",
            &fleet.tag,
            "--jobs",
            &JOBS.to_string(),
            "apply",
        ])
        .env("CONTAINER_HOST", &bench.url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {}", bench.lanectl.display()))?;
    // Only the lanes that are not ready, and the log.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let unready: Vec<&str> = stdout.lines().filter(|l| !l.contains("  ready ")).collect();
    ensure!(
        out.status.success(),
        "lanectl apply failed ({}):\n{}\n{}",
        out.status,
        unready.join("\n"),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(crate) async fn measure_lanectl(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("lc", n, run), n)?;
    let outcome = async {
        let ((), cold) = timed(lanectl_apply(bench, &fleet)).await?;
        let ((), noop) = timed(lanectl_apply(bench, &fleet)).await?;
        fleet.write_manifest(bench, &fleet.lanes[0], 1)?;
        let ((), edit) = timed(lanectl_apply(bench, &fleet)).await?;
        res.add_time(n, Key::LanectlCold, cold);
        res.add_time(n, Key::LanectlNoop, noop);
        res.add_time(n, Key::LanectlEdit, edit);
        Ok(())
    }
    .await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}
