//! Pure decisions: (desired lane, observed containers) -> one [`Action`].
//!
//! `plan` prints these and `apply` carries them out, so what `plan` says is
//! exactly what `apply` does. Convergence rules 2-6 of SPEC.md live here and
//! only here; rule 1 (an invalid manifest leaves its container alone) is the
//! caller's: an invalid lane is never planned.

use std::fmt;

use crate::container::{Observed, State};
use crate::hash::LaneHash;
use crate::labels;
use crate::manifest::{DesiredState, UpdateOrder};

/// What one lane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Create,
    Recreate(Why),
    /// Recreate start-first: the new container beside the old one, which
    /// serves until the new one is ready (and on, if it never is).
    Roll(Why),
    /// A start-first rollout cut short (a killed lanectl) left the new
    /// container running: probe it and swap.
    FinishRoll,
    /// Start the existing container (it ran before and exited or was stopped).
    Start,
    /// Unpause the existing container (`podman pause` froze it).
    Unpause,
    Stop,
    /// The manifest is gone: remove the lane's containers and status file.
    Remove,
}

/// Why a container must be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    SpecChanged,
    ImageRebuilt,
    CodexChanged,
    TrackedContentChanged,
    /// Created but never started (a crash between create and start): its
    /// codex copy may be incomplete, so it is never started.
    HalfMade,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::SpecChanged => "spec changed",
            Why::ImageRebuilt => "image rebuilt",
            Why::CodexChanged => "codex changed",
            Why::TrackedContentChanged => "tracked content changed",
            Why::HalfMade => "half-made",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Nothing => f.write_str("nothing"),
            Action::Create => f.write_str("create"),
            Action::Recreate(why) => write!(f, "recreate: {why}"),
            Action::Roll(why) => write!(f, "recreate: {why} (start-first)"),
            Action::FinishRoll => f.write_str("finish the start-first rollout"),
            Action::Start => f.write_str("start"),
            Action::Unpause => f.write_str("unpause"),
            Action::Stop => f.write_str("stop"),
            Action::Remove => f.write_str("remove: manifest deleted"),
        }
    }
}

impl Action {
    pub fn changes_something(&self) -> bool {
        *self != Action::Nothing
    }
}

/// What the manifest asks for, as far as planning needs it.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub state: DesiredState,
    pub hash: &'a LaneHash,
    /// The lane's container name (a rollout's new container is found by
    /// its temporary name, [`labels::next_name`]).
    pub container_name: &'a str,
    pub order: UpdateOrder,
}

/// The decision for one lane: what `plan` prints and what `exec` carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    /// The same decision with exactly what carrying it out needs.
    pub step: Step,
    /// Further containers of the same lane (left by a crash): removed first.
    pub extras: Vec<Observed>,
}

/// What `exec` does for a lane. A new container is made only with the hash
/// it is labelled with: a plan without a hash (a lane declared `stopped`
/// whose image is missing) cannot hold a `Make`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change; the lane's container, if it has one.
    Keep(Option<Observed>),
    /// A new container, replacing the lane's current one (if any).
    Make {
        hash: LaneHash,
        replacing: Option<Observed>,
    },
    /// start-first: a new container beside `old` (running), swapped in once
    /// ready; `old` keeps serving if it never is.
    Roll {
        hash: LaneHash,
        old: Observed,
    },
    /// A rollout's new container (`next`, the desired hash, running) awaits
    /// its probe and swap; `old` is the lane's running container, if any.
    FinishRoll {
        next: Observed,
        old: Option<Observed>,
    },
    Start(Observed),
    /// Thaw a paused container (the same one: not a restart).
    Unpause(Observed),
    /// Stop a running container; a paused one is thawed first.
    Stop(Observed),
    /// The manifest is gone: these containers and the status file go.
    Remove(Vec<Observed>),
}

impl Step {
    /// The container the step is about: the one to keep, start, stop or replace.
    pub fn current(&self) -> Option<&Observed> {
        match self {
            Step::Keep(c) | Step::Make { replacing: c, .. } => c.as_ref(),
            Step::Roll { old, .. } => Some(old),
            Step::FinishRoll { old, next } => old.as_ref().or(Some(next)),
            Step::Start(c) | Step::Unpause(c) | Step::Stop(c) => Some(c),
            Step::Remove(all) => all.first(),
        }
    }
}

/// Decides a lane declared `stopped`, which needs no hash: a running
/// container of the lane is stopped, whatever its hash, and nothing is created.
pub fn decide_stopped(mut observed: Vec<Observed>) -> Plan {
    observed.sort_by_key(|c| c.state != State::Running);
    let mut containers = observed.into_iter();
    let current = containers.next();
    let (action, step) = match current {
        Some(c) if c.state == State::Running => (Action::Stop, Step::Stop(c)),
        c => (Action::Nothing, Step::Keep(c)),
    };
    Plan {
        action,
        step,
        extras: containers.collect(),
    }
}

/// Decides a lane whose manifest is gone: its containers and status file
/// (`has_status`) are removed; nothing to do when it has neither.
pub fn decide_gone(observed: Vec<Observed>, has_status: bool) -> Plan {
    let action = if observed.is_empty() && !has_status {
        Action::Nothing
    } else {
        Action::Remove
    };
    Plan {
        action,
        step: Step::Remove(observed),
        extras: Vec::new(),
    }
}

/// Decides one lane with a manifest; `observed` are this instance's
/// containers labelled with the lane. A rollout's new container (by its
/// temporary name) is finished when it is what the lane wants and runs,
/// and is an extra otherwise.
pub fn decide(desired: Desired<'_>, observed: Vec<Observed>) -> Plan {
    let next_name = labels::next_name(desired.container_name);
    let (next, observed): (Vec<Observed>, Vec<Observed>) =
        observed.into_iter().partition(|c| c.name == next_name);
    let mut plan = decide_current(desired, observed);
    for next in next {
        let wanted = desired.state == DesiredState::Running
            && next.state == State::Running
            && next.labels.get(labels::SPEC_HASH) == Some(&desired.hash.full)
            && matches!(
                plan.action,
                Action::Create | Action::Recreate(_) | Action::Roll(_) | Action::Start
            );
        if !wanted || matches!(plan.step, Step::FinishRoll { .. }) {
            plan.extras.push(next);
            continue;
        }
        let current = plan.step.current().cloned();
        let (old, stale): (Option<Observed>, Option<Observed>) = match current {
            Some(c) if c.state == State::Running => (Some(c), None),
            other => (None, other),
        };
        plan.extras.extend(stale);
        plan.action = Action::FinishRoll;
        plan.step = Step::FinishRoll { next, old };
    }
    plan
}

/// [`decide`] for the lane's containers other than a rollout's new one.
fn decide_current(desired: Desired<'_>, mut observed: Vec<Observed>) -> Plan {
    // Keep the best container: matching hash first, then running, then newest
    // in list order; any others are extras.
    observed.sort_by_key(|c| {
        let same = c.labels.get(labels::SPEC_HASH) == Some(&desired.hash.full);
        (!same, c.state != State::Running)
    });
    let mut containers = observed.into_iter();
    let current = containers.next();
    let extras: Vec<Observed> = containers.collect();
    let make = |replacing| Step::Make {
        hash: desired.hash.clone(),
        replacing,
    };
    let (action, step) = match (desired.state, current) {
        (DesiredState::Running, None) => (Action::Create, make(None)),
        // A paused container holds its memory: a stopped lane stops it.
        (DesiredState::Stopped, Some(c)) if matches!(c.state, State::Running | State::Paused) => {
            (Action::Stop, Step::Stop(c))
        }
        (DesiredState::Stopped, c) => (Action::Nothing, Step::Keep(c)),
        (DesiredState::Running, Some(c)) => match why_different(&c, desired.hash) {
            // start-first only while the old one runs: with nothing
            // serving there is nothing to keep serving.
            Some(why)
                if desired.order == UpdateOrder::StartFirst
                    && c.state == State::Running
                    && c.ever_started =>
            {
                let hash = desired.hash.clone();
                (Action::Roll(why), Step::Roll { hash, old: c })
            }
            Some(why) => (Action::Recreate(why), make(Some(c))),
            // Never started, whatever Podman calls its state (`created`,
            // `configured`, `initialized` after `podman init`): half-made.
            None if !c.ever_started => (Action::Recreate(Why::HalfMade), make(Some(c))),
            None if c.state == State::Running => (Action::Nothing, Step::Keep(Some(c))),
            None if c.state == State::Paused => (Action::Unpause, Step::Unpause(c)),
            None => (Action::Start, Step::Start(c)),
        },
    };
    Plan {
        action,
        step,
        extras,
    }
}

/// Why the container's hash differs from the desired one, if it does.
fn why_different(c: &Observed, hash: &LaneHash) -> Option<Why> {
    let label = |key| c.labels.get(key).map(String::as_str);
    if label(labels::SPEC_HASH) == Some(hash.full.as_str()) {
        return None;
    }
    Some(
        if label(labels::CONFIG_HASH) != Some(hash.config.as_str()) {
            Why::SpecChanged
        } else if label(labels::IMAGE_ID) != Some(hash.image_id.as_str()) {
            Why::ImageRebuilt
        } else if label(labels::CODEX_FINGERPRINT) != hash.codex.as_deref() {
            Why::CodexChanged
        } else if label(labels::TRACKED_HASH).unwrap_or("") != hash.tracked {
            Why::TrackedContentChanged
        } else {
            Why::SpecChanged
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn hash() -> LaneHash {
        LaneHash {
            full: "sha256:full".into(),
            config: "cfg".into(),
            image_id: "img".into(),
            codex: Some("cx".into()),
            tracked: String::new(),
            tracked_parts: Vec::new(),
        }
    }

    fn container(state: State, ever_started: bool, h: &LaneHash) -> Observed {
        let labels = h.labels("inst", "alpha");
        Observed {
            id: format!("id-{state:?}"),
            name: "lane-alpha".into(),
            labels,
            state,
            ever_started,
            exit_code: None,
            exited_at: None,
            ports: Vec::new(),
        }
    }

    fn running(state: DesiredState, h: &LaneHash) -> Desired<'_> {
        Desired {
            state,
            hash: h,
            container_name: "lane-alpha",
            order: UpdateOrder::StopFirst,
        }
    }

    #[test]
    fn plan_creates_when_there_is_no_container() {
        let h = hash();
        assert_eq!(
            decide(running(DesiredState::Running, &h), vec![]).action,
            Action::Create
        );
    }

    #[test]
    fn plan_does_nothing_when_hash_matches_and_running() {
        let h = hash();
        let c = container(State::Running, true, &h);
        assert_eq!(
            decide(running(DesiredState::Running, &h), vec![c]).action,
            Action::Nothing
        );
    }

    #[test]
    fn plan_names_the_part_of_the_hash_that_changed() {
        let old = hash();
        let cases = [
            (
                LaneHash {
                    config: "cfg2".into(),
                    ..hash()
                },
                Why::SpecChanged,
            ),
            (
                LaneHash {
                    image_id: "img2".into(),
                    ..hash()
                },
                Why::ImageRebuilt,
            ),
            (
                LaneHash {
                    codex: Some("cx2".into()),
                    ..hash()
                },
                Why::CodexChanged,
            ),
            (
                LaneHash {
                    tracked: "t".into(),
                    ..hash()
                },
                Why::TrackedContentChanged,
            ),
        ];
        for (mut new, why) in cases {
            new.full = "sha256:other".into();
            let c = container(State::Running, true, &old);
            assert_eq!(
                decide(running(DesiredState::Running, &new), vec![c]).action,
                Action::Recreate(why)
            );
        }
    }

    #[test]
    fn plan_recreates_a_half_made_container_and_never_starts_it() {
        let h = hash();
        let c = container(State::Created, false, &h);
        assert_eq!(
            decide(running(DesiredState::Running, &h), vec![c]).action,
            Action::Recreate(Why::HalfMade)
        );
    }

    #[test]
    fn plan_recreates_a_never_started_container_whatever_its_state_is_called() {
        let h = hash();
        for state in ["initialized", "configured", "exited", "stopped"] {
            let c = container(State::parse(state), false, &h);
            assert_eq!(
                decide(running(DesiredState::Running, &h), vec![c]).action,
                Action::Recreate(Why::HalfMade),
                "{state}"
            );
        }
    }

    #[test]
    fn plan_starts_an_exited_container_with_the_same_hash() {
        let h = hash();
        let c = container(State::Exited, true, &h);
        assert_eq!(
            decide(running(DesiredState::Running, &h), vec![c]).action,
            Action::Start
        );
    }

    #[test]
    fn plan_stops_a_running_lane_declared_stopped_whatever_its_hash() {
        let h = hash();
        let mut c = container(State::Running, true, &h);
        c.labels = BTreeMap::new();
        assert_eq!(
            decide(running(DesiredState::Stopped, &h), vec![c]).action,
            Action::Stop
        );
    }

    #[test]
    fn a_stopped_lane_is_stopped_without_a_hash() {
        let h = hash();
        let c = container(State::Running, true, &h);
        assert_eq!(decide_stopped(vec![c]).action, Action::Stop);
        assert_eq!(decide_stopped(vec![]).action, Action::Nothing);
        let c = container(State::Exited, true, &h);
        assert_eq!(decide_stopped(vec![c]).action, Action::Nothing);
    }

    #[test]
    fn plan_creates_nothing_for_a_stopped_lane() {
        let h = hash();
        assert_eq!(
            decide(running(DesiredState::Stopped, &h), vec![]).action,
            Action::Nothing
        );
        let old = LaneHash {
            full: "sha256:old".into(),
            ..hash()
        };
        let c = container(State::Exited, true, &old);
        assert_eq!(
            decide(running(DesiredState::Stopped, &h), vec![c]).action,
            Action::Nothing
        );
    }

    #[test]
    fn a_new_container_is_made_with_the_desired_hash_and_replaces_the_old() {
        let h = hash();
        let old = LaneHash {
            config: "old-cfg".into(),
            full: "sha256:old".into(),
            ..hash()
        };
        let c = container(State::Running, true, &old);
        let plan = decide(running(DesiredState::Running, &h), vec![c.clone()]);
        assert_eq!(plan.action, Action::Recreate(Why::SpecChanged));
        assert_eq!(
            plan.step,
            Step::Make {
                hash: h.clone(),
                replacing: Some(c)
            }
        );
        let stopped = decide_stopped(vec![container(State::Exited, true, &h)]);
        assert!(matches!(stopped.step, Step::Keep(Some(_))));
    }

    #[test]
    fn plan_removes_when_the_manifest_is_gone() {
        let h = hash();
        let c = container(State::Running, true, &h);
        assert_eq!(decide_gone(vec![c.clone()], false).action, Action::Remove);
        assert_eq!(decide_gone(vec![], true).action, Action::Remove);
        assert_eq!(decide_gone(vec![], false).action, Action::Nothing);
        assert_eq!(
            decide_gone(vec![c.clone()], false).step,
            Step::Remove(vec![c])
        );
    }

    #[test]
    fn plan_keeps_the_matching_container_and_lists_extras() {
        let h = hash();
        let old = LaneHash {
            full: "sha256:old".into(),
            ..hash()
        };
        let stale = container(State::Exited, true, &old);
        let good = container(State::Running, true, &h);
        let plan = decide(
            running(DesiredState::Running, &h),
            vec![stale.clone(), good.clone()],
        );
        assert_eq!(plan.action, Action::Nothing);
        assert_eq!(plan.step, Step::Keep(Some(good)));
        assert_eq!(plan.extras, vec![stale]);
    }
}
