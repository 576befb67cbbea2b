//! `apply` and `plan`: one pass over the lanes, acting or only deciding.

use super::Exit;
use crate::cli::{ColorMode, Global, ProgressMode};
use crate::plan::Action;
use crate::reconcile::pass::{self, PassOptions};
use crate::reconcile::{Mode, Outcome};
use crate::status::Phase;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Apply {
        progress: ProgressMode,
        color: ColorMode,
    },
    Plan {
        detailed_exitcode: bool,
        /// Old -> new values under each spec change.
        diff: bool,
        /// A JSON array instead of lines.
        json: bool,
    },
}

pub async fn run(
    global: &Global,
    lanes: Vec<String>,
    allow_prune_all: bool,
    kind: Kind,
) -> anyhow::Result<Exit> {
    let mode = match kind {
        Kind::Apply { .. } => Mode::Apply,
        Kind::Plan { .. } => Mode::Plan,
    };
    let (progress_mode, colour) = match kind {
        // plain is for logs: never a control character.
        Kind::Apply { progress, color } => {
            (progress, progress != ProgressMode::Plain && colours(color))
        }
        // plan acts on nothing: no live lines to show, only its result.
        Kind::Plan { .. } => (ProgressMode::Quiet, false),
    };
    let live = Live::start(progress_mode);
    let ctx = super::context_with(global, live.sink()).await?;
    let named = !lanes.is_empty();
    let opts = PassOptions {
        only: lanes,
        jobs: usize::from(global.jobs),
        allow_prune_all,
        load: global.load_options(),
    };
    let outcomes = pass::pass(ctx, mode, &opts).await?;
    live.finish();
    let width = outcomes.iter().map(|o| o.lane.len()).max().unwrap_or(0);
    if let Kind::Plan { json: true, .. } = kind {
        let planned: Vec<Planned> = outcomes.iter().map(Planned::of).collect();
        println!("{}", serde_json::to_string_pretty(&planned)?);
    }
    for o in &outcomes {
        let line = match kind {
            // JSON events said it all; quiet says only what did not converge.
            Kind::Apply { .. } if progress_mode == ProgressMode::Json => continue,
            Kind::Apply { .. } if progress_mode == ProgressMode::Quiet && o.converged() => continue,
            Kind::Apply { .. } if colour => coloured(&apply_line(o), o.phase),
            Kind::Apply { .. } => apply_line(o),
            Kind::Plan { json: true, .. } => continue,
            Kind::Plan { .. } => plan_line(o),
        };
        match &o.status_error {
            Some(e) => println!("{:width$}  {line}; status not written: {e}", o.lane),
            None => println!("{:width$}  {line}", o.lane),
        }
        if let Kind::Plan { diff: true, .. } = kind {
            for c in &o.changes {
                println!("{:width$}    {}: {} -> {}", "", c.field, c.old, c.new);
            }
        }
    }
    Ok(match kind {
        Kind::Apply { .. } => {
            // A pruned lane is fine, unless it was named: then its manifest is missing.
            let ok = |o: &Outcome| {
                o.converged() || (!o.has_manifest && !named && o.phase != Phase::Failed)
            };
            Exit::failed_if(!outcomes.iter().all(ok))
        }
        Kind::Plan {
            detailed_exitcode, ..
        } => {
            // A named lane of another host is as much an error as a named
            // lane without a manifest (`apply` fails for both too), and so
            // is one whose containers stay here (a changed hostname).
            let errors = outcomes.iter().any(|o| {
                o.action.is_none()
                    || (o.elsewhere.is_some() && (named || o.phase == Phase::Failed))
                    || (!o.has_manifest
                        && o.elsewhere.is_none()
                        && o.action == Some(Action::Nothing))
            });
            let changes = outcomes
                .iter()
                .any(|o| o.extras > 0 || o.action.as_ref().is_some_and(Action::changes_something));
            match (errors, changes, detailed_exitcode) {
                (true, _, _) => Exit::Failed,
                (false, true, true) => Exit::Changes,
                _ => Exit::Ok,
            }
        }
    })
}

/// Whether to colour: always, never, or on a terminal without `NO_COLOR`.
fn colours(mode: ColorMode) -> bool {
    match mode {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
        }
    }
}

/// The line with its phase word coloured (green ready, yellow pending,
/// red for trouble).
fn coloured(line: &str, phase: Phase) -> String {
    let code = match phase {
        Phase::Ready | Phase::Stopped => "32",
        Phase::Pending => "33",
        Phase::Failed | Phase::Invalid | Phase::Degraded => "31",
    };
    let word = phase.to_string();
    match line.find(&word) {
        Some(at) => format!(
            "{}\x1b[{code}m{word}\x1b[0m{}",
            &line[..at],
            &line[at + word.len()..]
        ),
        None => line.to_string(),
    }
}

/// What `apply` shows while the lanes converge.
enum Live {
    None,
    /// A line per step on stdout, no control characters.
    Plain(std::time::Instant),
    /// NDJSON events on stdout, after a line naming the format.
    Json(std::time::Instant),
    /// A spinner line per lane on the terminal (indicatif).
    Bars(std::sync::Arc<Bars>),
}

struct Bars {
    multi: indicatif::MultiProgress,
    lanes: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

/// The version of `--progress json`'s events.
const JSON_FORMAT_VERSION: u32 = 1;

impl Live {
    fn start(mode: ProgressMode) -> Live {
        let clock = std::time::Instant::now();
        match mode {
            ProgressMode::Plain => Live::Plain(clock),
            ProgressMode::Json => {
                println!(
                    "{}",
                    serde_json::json!({"format": "lanectl-progress", "version": JSON_FORMAT_VERSION})
                );
                Live::Json(clock)
            }
            ProgressMode::Auto if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                Live::Bars(std::sync::Arc::new(Bars {
                    multi: indicatif::MultiProgress::new(),
                    lanes: std::sync::Mutex::default(),
                }))
            }
            ProgressMode::Auto | ProgressMode::Quiet => Live::None,
        }
    }

    /// The sink the reconcile tells each step.
    fn sink(&self) -> Option<crate::reconcile::ctx::Progress> {
        match self {
            Live::None => None,
            Live::Plain(clock) => {
                let clock = *clock;
                Some(std::sync::Arc::new(
                    move |lane: &str, step: &str, done: Option<&Outcome>| {
                        let step = match done {
                            Some(o) => format!("done: {}", o.phase),
                            None => step.to_string(),
                        };
                        // No control characters: whatever a message holds.
                        let line =
                            format!("{:7.3}s  {lane}  {step}", clock.elapsed().as_secs_f64());
                        println!("{}", line.replace(|c: char| c.is_control(), " "));
                    },
                ))
            }
            Live::Json(clock) => {
                let clock = *clock;
                Some(std::sync::Arc::new(
                    move |lane: &str, step: &str, done: Option<&Outcome>| {
                        let mut event = serde_json::json!({
                            "lane": lane,
                            "step": step,
                            "elapsed": clock.elapsed().as_secs_f64(),
                        });
                        if let Some(o) = done {
                            event["result"] = serde_json::json!(o.phase.to_string());
                            event["message"] = serde_json::json!(o.message);
                        }
                        println!("{event}");
                    },
                ))
            }
            Live::Bars(bars) => {
                let bars = bars.clone();
                Some(std::sync::Arc::new(
                    move |lane: &str, step: &str, done: Option<&Outcome>| {
                        let mut lanes = crate::lock::lock(&bars.lanes);
                        let bar = lanes.entry(lane.to_string()).or_insert_with(|| {
                            let bar = bars.multi.add(indicatif::ProgressBar::new_spinner());
                            bar.enable_steady_tick(std::time::Duration::from_millis(120));
                            bar.set_prefix(lane.to_string());
                            if let Ok(style) =
                                indicatif::ProgressStyle::with_template("{spinner} {prefix}  {msg}")
                            {
                                bar.set_style(style);
                            }
                            bar
                        });
                        match done {
                            Some(o) => bar.finish_with_message(format!("{}", o.phase)),
                            None => bar.set_message(step.to_string()),
                        }
                    },
                ))
            }
        }
    }

    /// The live lines make way for the result lines.
    fn finish(&self) {
        if let Live::Bars(bars) = self {
            let _ = bars.multi.clear();
        }
    }
}

fn apply_line(o: &Outcome) -> String {
    if let Some(line) = elsewhere_line(o) {
        return line;
    }
    let done = match &o.action {
        Some(Action::Nothing) => "nothing to do".to_string(),
        Some(a) => a.to_string(),
        None => String::new(),
    };
    match (o.has_manifest, o.phase, &o.endpoint) {
        (false, Phase::Failed, _) => format!("failed: {}", o.message),
        (false, _, _) => format!("{} ({done})", o.message),
        (true, Phase::Ready, Some(endpoint)) => format!("ready {endpoint} ({done})"),
        (true, Phase::Ready | Phase::Stopped, _) => format!("{} ({done})", o.phase),
        (true, phase, _) => format!("{phase}: {}", o.message),
    }
}

/// The line of a lane that runs on another host: skipped, or a container
/// of it left from before removed.
fn elsewhere_line(o: &Outcome) -> Option<String> {
    let host = o.elsewhere.as_ref()?;
    Some(match (&o.action, o.phase) {
        (_, Phase::Failed) => format!("failed: {}", o.message),
        (Some(Action::Nothing), _) => format!("skipped: runs on host {host}"),
        (Some(Action::Remove), _) if o.message == "removed" => {
            format!("removed: runs on host {host}")
        }
        _ => format!("remove: runs on host {host}"),
    })
}

/// One lane of `plan --json`.
#[derive(serde::Serialize)]
struct Planned<'a> {
    lane: &'a str,
    /// `nothing`, `create`, `recreate`, `start`, `unpause`, `stop`,
    /// `remove`, `finish-rollout`, `skip` (a lane of another host); or, when nothing can be planned, the
    /// lane's phase (`invalid`, `failed`).
    action: String,
    /// Why: what changed for a recreate, the problem when nothing can be
    /// planned; empty otherwise.
    reason: String,
    /// `start-first` for a recreate that starts the new container first.
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'static str>,
    /// A spec change's fields.
    fields: Vec<&'a str>,
    /// Stray containers of the lane that go first.
    extras: usize,
}

impl<'a> Planned<'a> {
    fn of(o: &'a Outcome) -> Planned<'a> {
        let (action, reason, order) = match &o.action {
            None => (o.phase.to_string(), o.message.clone(), None),
            Some(Action::Nothing) => ("nothing".into(), String::new(), None),
            Some(Action::Create) => ("create".into(), String::new(), None),
            Some(Action::Recreate(why)) => ("recreate".into(), why.to_string(), None),
            Some(Action::Roll(why)) => ("recreate".into(), why.to_string(), Some("start-first")),
            Some(Action::FinishRoll) => {
                ("finish-rollout".into(), String::new(), Some("start-first"))
            }
            Some(Action::Start) => ("start".into(), String::new(), None),
            Some(Action::Unpause) => ("unpause".into(), String::new(), None),
            Some(Action::Stop) => ("stop".into(), String::new(), None),
            Some(Action::Remove) => match &o.elsewhere {
                Some(host) => ("remove".into(), format!("runs on host {host}"), None),
                None => ("remove".into(), "manifest deleted".into(), None),
            },
        };
        let action = match &o.elsewhere {
            Some(_) if o.action == Some(Action::Nothing) => "skip".into(),
            _ => action,
        };
        let reason = match &o.elsewhere {
            Some(host) if o.action == Some(Action::Nothing) => format!("runs on host {host}"),
            _ => reason,
        };
        Planned {
            lane: &o.lane,
            action,
            reason,
            order,
            fields: o.changes.iter().map(|c| c.field.as_str()).collect(),
            extras: o.extras,
        }
    }
}

fn plan_line(o: &Outcome) -> String {
    if let Some(line) = elsewhere_line(o) {
        return line.replacen("skipped:", "skip:", 1);
    }
    let line = match &o.action {
        Some(Action::Nothing) if !o.has_manifest => "no manifest and no container".into(),
        Some(a) => a.to_string(),
        None => format!("{}: {}", o.phase, o.message),
    };
    // A change names what it touches: `spec changed (env.A, mounts[0].read_only)`,
    // `codex changed (config.toml)`, `tracked content changed (/data)`.
    let why = match &o.action {
        Some(Action::Recreate(why) | Action::Roll(why)) => Some(why.to_string()),
        _ => None,
    };
    let line = match why {
        Some(why) if !o.changes.is_empty() => {
            let fields: Vec<&str> = o.changes.iter().map(|c| c.field.as_str()).collect();
            line.replacen(&why, &format!("{why} ({})", fields.join(", ")), 1)
        }
        _ => line,
    };
    match o.extras {
        0 => line,
        n => format!("{line}; remove {n} stray container(s) of the lane"),
    }
}
