//! One file per command. Commands print what users read to stdout (not
//! through tracing) and return how they ended ([`Exit`]); `main` maps that,
//! and an error, to the exit code.

mod apply;
mod down;
mod render;
mod run;
mod status;
mod validate;
mod wait;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{Cli, Command, Global};
use crate::content::Policy;
use crate::podman::Podman;
use crate::reconcile::Ctx;

/// How a command ended, for `main` to map to an exit code (an `Err` is a
/// failure too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done (or, for `plan`, would be).
    Ok,
    /// Something asked for failed: a lane, a file, a container.
    Failed,
    /// `plan --detailed-exitcode`: there are changes to make.
    Changes,
}

impl Exit {
    /// `Failed` when anything failed, else `Ok`.
    pub fn failed_if(failed: bool) -> Exit {
        if failed { Exit::Failed } else { Exit::Ok }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let global = cli.global;
    match cli.command {
        Command::Schema => {
            print!("{}", crate::manifest::schema_json());
            Ok(Exit::Ok)
        }
        Command::Validate { paths } => validate::run(&global, &paths),
        Command::Render { to } => render::run(&global, to),
        Command::Status { lanes, json } => status::run(&global, &lanes, json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let shell = match shell {
                crate::cli::Shell::Bash => clap_complete::Shell::Bash,
                crate::cli::Shell::Zsh => clap_complete::Shell::Zsh,
                crate::cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "lanectl", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(Exit::Ok)
        }
        Command::Wait {
            lanes,
            wait_for,
            timeout,
        } => wait::run(&global, lanes, wait_for, timeout),
        Command::Apply {
            lanes,
            allow_prune_all,
            progress,
            quiet,
            color,
        } => runtime()?.block_on(apply::run(
            &global,
            lanes,
            allow_prune_all,
            apply::Kind::Apply {
                progress: if quiet {
                    crate::cli::ProgressMode::Quiet
                } else {
                    progress
                },
                color,
            },
        )),
        Command::Plan {
            lanes,
            detailed_exitcode,
            diff,
            json,
        } => runtime()?.block_on(apply::run(
            &global,
            lanes,
            false,
            apply::Kind::Plan {
                detailed_exitcode,
                diff,
                json,
            },
        )),
        Command::Down { lanes } => runtime()?.block_on(down::run(&global, lanes)),
        Command::Run {
            resync,
            allow_prune_all,
            metrics,
        } => {
            crate::daemon::limit_malloc_arenas(); // before any thread starts
            runtime()?.block_on(run::run(&global, resync, allow_prune_all, metrics))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The instance id: `--instance`, else `_defaults.yaml`'s `instance:`, else
/// derived from the directory's canonical path.
fn instance(global: &Global) -> anyhow::Result<String> {
    instance_declared(global).map(|(id, _)| id)
}

/// [`instance`], and whether it was declared (`--instance` or the
/// defaults), not derived from this machine's path.
pub(crate) fn instance_declared(global: &Global) -> anyhow::Result<(String, bool)> {
    match &global.instance {
        Some(id) => Ok((id.clone(), true)),
        None => match crate::desired::declared_instance(&global.dir) {
            Ok(Some(id)) => Ok((id, true)),
            Ok(None) => crate::labels::default_instance(&global.dir)
                .map(|id| (id, false))
                .with_context(|| {
                    format!("cannot resolve lanes directory {}", global.dir.display())
                }),
            Err(problem) => Err(anyhow::anyhow!("{problem}")),
        },
    }
}

/// What to do when no Podman answers: the commands that start one.
pub const NO_PODMAN_FIX: &str = "start Podman's API service: `systemctl enable --now podman.socket` \
     (as root; rootless: `systemctl --user enable --now podman.socket`), or point --podman or \
     CONTAINER_HOST at one that runs (e.g. unix:///run/podman/podman.sock)";

/// Connects to Podman and builds the context shared by a pass.
async fn context(global: &Global) -> anyhow::Result<Arc<Ctx>> {
    context_with(global, None).await
}

/// [`context`], telling `progress` each step a lane takes.
async fn context_with(
    global: &Global,
    progress: Option<crate::reconcile::ctx::Progress>,
) -> anyhow::Result<Arc<Ctx>> {
    let instance = instance(global)?;
    let podman = Podman::connect(global.podman.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{NO_PODMAN_FIX}"))?;
    tracing::debug!(url = podman.url(), instance = %instance, "connected to podman");
    let ctx = Ctx::new(podman, dir_of(&global.dir), instance)
        .with_jobs(global.jobs.into())
        .with_policy(Policy::of_process(global.allow_insecure_permissions))
        .with_change_lock(global.lock_wait);
    let ctx = match progress {
        Some(progress) => ctx.with_progress(progress),
        None => ctx,
    };
    Ok(Arc::new(ctx))
}

fn dir_of(dir: &Path) -> std::path::PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
