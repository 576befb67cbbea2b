//! A start-first rollout (SPEC.md "Rollouts"), step by step: the new
//! container is made beside the running one under a temporary name, probed
//! while the old one serves, and only once it answers does the status file
//! switch to it (one atomic write); then the old one serves on for `drain`,
//! is stopped within its stop timeout and removed, and the new one takes
//! the lane's container name.
//!
//! keep-last-good: when the new container fails at any step (create, copy,
//! start, exit, probe), it is removed and the lane is `degraded`, its status
//! still naming the old container, which never stopped serving.
//!
//! A lanectl killed anywhere in between leaves at most the one new
//! container, under its temporary name: the next pass finishes the swap
//! when it runs the desired hash (`Step::FinishRoll`: probed again, then
//! swapped), and removes it otherwise (`plan.rs`). Changes to Podman hold
//! `--jobs` and the directory's change lock; the probe holds neither.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::lane::{finish, write_status};
use super::report::{self, Ended, Facts, Probed};
use super::{Ctx, Hooks, Mode, Outcome};
use crate::container::{Now, Observed, State, short};
use crate::error;
use crate::lanespec::LaneSpec;
use crate::plan::{Plan, Step};
use crate::probe;

/// How often the new container is looked at while it is probed: one that
/// exits fails the rollout at once, not at the probe's timeout.
const EXIT_WATCH: Duration = Duration::from_millis(500);

/// Carries out a [`Step::Roll`] or [`Step::FinishRoll`]. `guards` (the
/// `--jobs` permit and the change lock, held by the caller) are let go once
/// the new container is made, and taken again for the swap.
pub async fn run<G>(
    ctx: &Ctx,
    spec: &LaneSpec,
    plan: &Plan,
    facts: &Facts<'_>,
    hooks: Hooks<'_>,
    guards: G,
) -> Outcome {
    let (next, old, desired_hash) = match &plan.step {
        Step::Roll { hash, old } => {
            info!(old = %old.name, "start-first: making the new container beside the old one");
            let made = ctx.exec().make_next(spec, hash).await;
            drop(guards);
            match made {
                Ok(next) => (next, Some(old), hash.full.clone()),
                Err(e) => {
                    let why = format!("create, copy or start: {}", error::chain(&e));
                    return degraded(ctx, plan, facts, spec, old, &hash.full, &why);
                }
            }
        }
        Step::FinishRoll { next, old } => {
            drop(guards);
            let hash = next
                .labels
                .get(crate::labels::SPEC_HASH)
                .cloned()
                .unwrap_or_default();
            (Now::from(next), old.as_ref(), hash)
        }
        _ => return finish(ctx, Mode::Apply, Some(plan), facts, halted("not a rollout")),
    };

    // The old container serves while the new one is probed.
    let probed = probe_next(ctx, spec, &next, hooks).await;
    let failed = match probed {
        Some(Ok(())) => None,
        Some(Err(why)) => Some(why),
        None => match ctx.podman.inspect(&next.id).await {
            // Interrupted by a shutdown: the next pass probes it again.
            Ok(Some(c)) if c.state == State::Running => {
                let mut outcome = Outcome::new(
                    facts.lane,
                    Some(plan.action.clone()),
                    crate::status::Phase::Pending,
                    "not probed: interrupted; the next pass probes again",
                );
                outcome.interrupted = true;
                return outcome;
            }
            _ => Some("the new container stopped or went during its probe".to_string()),
        },
    };
    if let Some(why) = failed {
        ctx.exec().discard(&next).await;
        return match old {
            Some(old) => degraded(ctx, plan, facts, spec, old, &desired_hash, &why),
            None => {
                let ended = Ended::Halted {
                    phase: crate::status::Phase::Failed,
                    container: None,
                    message: format!("start-first: the new container failed: {why}"),
                };
                finish(ctx, Mode::Apply, Some(plan), facts, ended)
            }
        };
    }

    // Switch: readers that follow the status file go to the new container
    // now, while the old one still answers for `drain`.
    let mut facts = facts.clone();
    facts.restarts = 0;
    if let Some(book) = hooks.restarts {
        book.forget(facts.lane);
    }
    let switched = Ended::Settled {
        now: Some(&next),
        spec,
        probed: Probed::Ready,
    };
    write_status(ctx, report::compose(&facts, switched));
    if old.is_some() {
        debug!(drain = ?spec.update.drain, "draining the old container");
        tokio::time::sleep(spec.update.drain).await;
    }

    // Swap: the old one goes, the new one takes the name.
    let _acting = ctx.acting.acquire().await.ok();
    let held = ctx.hold_changes().await;
    let swapped = match held {
        Ok(_held) => ctx
            .exec()
            .swap(&next, old, &spec.container_name)
            .await
            .map_err(|e| error::chain(&e)),
        Err(e) => Err(error::chain(&e)),
    };
    match swapped {
        Ok(now) => {
            info!(container = %now.name, id = short(&now.id), "start-first: swapped");
            let ended = Ended::Settled {
                now: Some(&now),
                spec,
                probed: Probed::Ready,
            };
            finish(ctx, Mode::Apply, Some(plan), &facts, ended)
        }
        Err(why) => {
            warn!(error = %why, "start-first: the swap failed; the next pass finishes it");
            let ended = Ended::Settled {
                now: Some(&next),
                spec,
                probed: Probed::Failed(format!(
                    "start-first: the new container serves, but the swap failed: {why}; the next pass finishes it"
                )),
            };
            finish(ctx, Mode::Apply, Some(plan), &facts, ended)
        }
    }
}

/// keep-last-good: the old container serves on; the lane is `degraded`.
fn degraded(
    ctx: &Ctx,
    plan: &Plan,
    facts: &Facts<'_>,
    spec: &LaneSpec,
    old: &Observed,
    desired_hash: &str,
    why: &str,
) -> Outcome {
    warn!(old = %old.name, reason = why, "start-first: the new container failed; the old one serves on");
    let old = Now::from(old);
    let ended = Ended::Degraded {
        old: &old,
        spec,
        desired_hash: desired_hash.to_string(),
        message: format!(
            "start-first rollout of {} failed at {why}; container {} serves on",
            short(desired_hash.trim_start_matches("sha256:")),
            old.name
        ),
    };
    finish(ctx, Mode::Apply, Some(plan), facts, ended)
}

fn halted(message: &str) -> Ended<'static> {
    Ended::Halted {
        phase: crate::status::Phase::Failed,
        container: None,
        message: message.to_string(),
    }
}

/// Probes the new container until it answers, its probe times out, it
/// stops running, or the daemon interrupts (`None`).
async fn probe_next(
    ctx: &Ctx,
    spec: &LaneSpec,
    next: &Now,
    hooks: Hooks<'_>,
) -> Option<Result<(), String>> {
    let Some(p) = &spec.probe else {
        return Some(Ok(()));
    };
    let Some(addr) = report::probe_addr_of(&next.ports, p.port) else {
        return Some(Err(format!("probe: port {}/tcp is not published", p.port)));
    };
    if let Some(probing) = hooks.probing {
        probing.start(&spec.lane, &next.id);
    }
    let waited = async {
        probe::wait_ready(addr, &p.path, p.timeout, p.interval)
            .await
            .map_err(|e| format!("probe: {e}"))
    };
    let cancelled = async {
        match hooks.cancel {
            Some(cancel) => cancel.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = waited => Some(r),
        why = exited(ctx, &next.id) => Some(Err(why)),
        () = cancelled => None,
    };
    if let Some(probing) = hooks.probing {
        probing.stop(&spec.lane);
    }
    result
}

/// Returns once the container `id` no longer runs, saying so.
async fn exited(ctx: &Ctx, id: &str) -> String {
    loop {
        tokio::time::sleep(EXIT_WATCH).await;
        match ctx.podman.inspect(id).await {
            Ok(Some(c)) if c.state == State::Running => {}
            Ok(Some(_)) => return "exit: the new container stopped during its probe".to_string(),
            Ok(None) => return "exit: the new container went during its probe".to_string(),
            Err(_) => {} // Podman busy or away: the probe's timeout still bounds the wait
        }
    }
}
