//! One file per command. Commands print what users read to stdout (not
//! through tracing) and return the exit code; `main` maps errors to 1.

mod apply;
mod down;
mod run;
mod status;
mod validate;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{Cli, Command, Global};
use crate::hash::Policy;
use crate::podman::Podman;
use crate::reconcile::Ctx;

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Schema => {
            print!("{}", crate::manifest::schema_json());
            Ok(0)
        }
        Command::Validate { paths } => validate::run(&global, &paths),
        Command::Status { json } => status::run(&global, json),
        Command::Apply {
            lanes,
            allow_prune_all,
        } => runtime()?.block_on(apply::run(
            &global,
            lanes,
            allow_prune_all,
            apply::Kind::Apply,
        )),
        Command::Plan {
            lanes,
            detailed_exitcode,
        } => runtime()?.block_on(apply::run(
            &global,
            lanes,
            false,
            apply::Kind::Plan { detailed_exitcode },
        )),
        Command::Down { lanes } => runtime()?.block_on(down::run(&global, lanes)),
        Command::Run {
            resync,
            allow_prune_all,
        } => {
            crate::daemon::limit_malloc_arenas(); // before any thread starts
            runtime()?.block_on(run::run(&global, resync, allow_prune_all))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The instance id: `--instance`, else derived from the directory's path.
fn instance(global: &Global) -> anyhow::Result<String> {
    match &global.instance {
        Some(id) => Ok(id.clone()),
        None => crate::labels::default_instance(&global.dir)
            .with_context(|| format!("cannot resolve lanes directory {}", global.dir.display())),
    }
}

/// Connects to Podman and builds the context shared by a pass.
async fn context(global: &Global) -> anyhow::Result<Arc<Ctx>> {
    let instance = instance(global)?;
    let podman = Podman::connect(global.podman.as_deref()).await?;
    tracing::debug!(url = podman.url(), instance = %instance, "connected to podman");
    let ctx = Ctx::new(podman, dir_of(&global.dir), instance)
        .with_jobs(global.jobs.into())
        .with_policy(Policy::of_process(global.allow_insecure_permissions));
    Ok(Arc::new(ctx))
}

fn dir_of(dir: &Path) -> std::path::PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
