//! The benchmark of issue 5: lanectl against the floor and the tools users
//! would pick, side by side in one run. `scripts/bench` is the documented way
//! to run it (it starts a private Podman service, builds the worker image and
//! lanectl, then runs this); by hand:
//!
//! ```text
//! cargo run --release --example bench -- [--lanes 10,30,100] [--runs 3] [--json PATH] [--quick]
//! ```
//!
//! with `CONTAINER_HOST` naming the Podman service, the worker image built into
//! it (`--image`, default `$LANECTL_TEST_IMAGE` or `localhost/lane-worker:dev`)
//! and the worker binary at `--worker` (default `target/lane-worker/lane-worker`).
//!
//! For each N it generates N lanes in a temporary lanes directory, each: the
//! worker image, one published port, 4 env vars, 2 bind mounts (the worker
//! binary read-only and a workspace), a codex dir of 3 files and a probe on
//! `/healthz` (interval 50 ms everywhere). "Done" always means every endpoint
//! answered 2xx. Per run, each measurement on its own containers, removed after
//! it:
//!
//! - **lanectl** (`target/release/lanectl --jobs 8`, one process per call):
//!   cold `apply`, no-op `apply`, `apply` after one env edit;
//! - **the floor**: the same Podman operations issued directly through
//!   podman-api, 8 lanes at a time, no lanectl logic: per lane create (the same
//!   body, labels included), archive copy of the codex tar, start, inspect for
//!   the port, probe until 2xx. The no-op floor is one list call plus one probe
//!   per lane; the edit floor is `rm -f` of one container plus that lane's
//!   create+copy+start+inspect+probe (both parts are reported too);
//! - **the Go runtime's sequence** (the shared `reference/container_runtime.go.txt` beside SPEC.md):
//!   `podman --remote` CLI calls per lane, lanes one after another, as it makes
//!   them: `image exists`, `inspect`, [`rm -f` when drifted], `create`, `cp`,
//!   `inspect`, `start`, `port`, then the probe;
//! - **docker-compose** on the Podman socket, when a `docker-compose` binary
//!   (or the `docker compose` plugin) exists: `up -d` cold, again, and after
//!   one env edit, each followed by a probe of every lane (compose cannot copy
//!   into a container before its start, so its codex is a read-only mount).
//!
//! Then, per N, **lanectl run** (the daemon, `--jobs 8`, default resync): start
//! to all N `ready`, and `--runs` times: a new manifest written until its
//! status file says `ready`, and `rm -f` of one lane's container (through the
//! API) until its status is `ready` with a new container ID. For the largest N
//! only, the daemon's idle RSS (max `VmRSS` sampled each second) and CPU
//! (`utime+stime` from `/proc/PID/stat`, in % of one core) over 30 s (10 s with
//! `--quick`), on a daemon started over the ready lanes: without `--metrics`
//! and then with it (`/metrics` scraped every 5 s).
//!
//! Beside the smallest N, once per run: **rollouts** of one lane (issue 11,
//! `rollout.rs`): a client polling the endpoint every 10 ms while the lane is
//! recreated 20 times (3 with `--quick`), for lanectl stop-first, lanectl
//! start-first and docker-compose: failed requests and the longest gap; the
//! start-first edit → new version serving (to one lane's
//! create+copy+start+probe) and → old one gone; and the share of stop-first
//! recreates that kept their host port.
//!
//! One untimed lane is made and removed first (a fresh service's first
//! container pays one-off set-up costs). A measurement that fails (on a shared
//! host Podman 4.3's port forwarding misbehaves now and then) is reported,
//! its samples dropped, and made again on fresh containers, up to 3 times;
//! the failures are kept in the JSON's `notes`.
//!
//! Output: one table (median, min, max; each lanectl figure as a ratio to the
//! floor and to the best peer measured in the same run: cold and daemon start
//! to the cold floor, no-op to the no-op floor, the edit and `rm -f` → ready to
//! the edit floor, manifest → ready to one lane's create+copy+start+probe),
//! the issue's targets checked against it (at N=30 when measured), and with
//! `--json PATH` the same as JSON. Times are reported, never asserted: the exit
//! code only says whether every measurement of lanectl, the floor and the Go
//! sequence could be made (docker-compose giving up is noted, not fatal).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use podman_api::Podman;

/// The label that marks every container this benchmark makes; its value is the
/// measurement's tag, which starts with `b<pid>-`.
const BENCH_LABEL: &str = "lanectl-bench";
const WORKER_TARGET: &str = "/usr/local/bin/lane-worker";
const PORT: u16 = 31417;
const PROBE_PATH: &str = "/healthz";
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const PROBE_BUDGET: Duration = Duration::from_secs(30);
/// lanectl's default `--jobs`, used for lanectl and the floor alike.
const JOBS: usize = 8;
/// Longest any single measurement may take before the benchmark gives up.
const MEASUREMENT_LIMIT: Duration = Duration::from_secs(900);

#[derive(Parser, Debug)]
#[command(about = "lanectl's benchmark (issue 5); see the source's header")]
struct Args {
    /// Lane counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,30,100")]
    lanes: Vec<usize>,
    /// Runs per measurement (median, min and max are over these).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CI's variant: N=10, one run, 10 s of daemon idle.
    #[arg(long)]
    quick: bool,
    /// Measurements to leave out, comma-separated: lanectl, daemon, floor, go, compose, rollout.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// The lanectl binary (default: target/release/lanectl of this checkout).
    #[arg(long)]
    lanectl: Option<PathBuf>,
    /// The worker image (default: $LANECTL_TEST_IMAGE, else localhost/lane-worker:dev).
    #[arg(long)]
    image: Option<String>,
    /// The worker binary (default: $LANECTL_TEST_WORKER, else target/lane-worker/lane-worker).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Seconds of daemon idle to measure (default 30, 10 with --quick).
    #[arg(long)]
    idle_secs: Option<u64>,
}

/// What every measurement needs.
struct Bench {
    api: Podman,
    url: String,
    image: String,
    worker: PathBuf,
    lanectl: PathBuf,
    /// `docker-compose` or `docker compose`, when installed.
    compose: Option<Vec<String>>,
    skip: Vec<String>,
}

impl Bench {
    fn runs(&self, what: &str) -> bool {
        !self.skip.iter().any(|s| s == what)
    }
}

mod apply;
mod compose;
mod daemon;
mod fleet;
mod floor;
mod go;
mod output;
mod results;
mod rollout;
mod util;

use apply::measure_lanectl;
use compose::{find_compose, measure_compose};
use daemon::measure_daemon;
use fleet::Fleet;
use floor::{FloorLane, measure_floor};
use go::measure_go;
use output::{machine, report_json, show, table, targets};
use results::{Key, Results};
use rollout::measure_rollouts;
use util::{remove_leftovers, remove_tagged, tag};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.lanes = vec![10];
        args.runs = 1;
    }
    ensure!(args.runs > 0, "--runs must be at least 1");
    let known = ["lanectl", "daemon", "floor", "go", "compose", "rollout"];
    if let Some(bad) = args.skip.iter().find(|s| !known.contains(&s.as_str())) {
        bail!("--skip {bad}: not one of {}", known.join(", "));
    }
    ensure!(
        !args.lanes.is_empty() && args.lanes.iter().all(|&n| n > 0),
        "--lanes needs positive counts"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = std::env::var("CONTAINER_HOST")
        .context("CONTAINER_HOST must name the Podman service (scripts/bench sets it)")?;
    let worker = args
        .worker
        .or_else(|| std::env::var_os("LANECTL_TEST_WORKER").map(PathBuf::from))
        .unwrap_or_else(|| repo.join("target/lane-worker/lane-worker"));
    let bench = Bench {
        api: Podman::new(&url)?,
        url,
        image: args
            .image
            .or_else(|| std::env::var("LANECTL_TEST_IMAGE").ok())
            .unwrap_or_else(|| "localhost/lane-worker:dev".into()),
        worker: std::fs::canonicalize(&worker)
            .with_context(|| format!("worker binary {}", worker.display()))?,
        lanectl: args
            .lanectl
            .unwrap_or_else(|| repo.join("target/release/lanectl")),
        compose: find_compose(),
        skip: args.skip,
    };
    ensure!(
        bench.lanectl.is_file(),
        "{} is missing: cargo build --release",
        bench.lanectl.display()
    );
    bench.api.ping().await.context("Podman does not answer")?;
    ensure!(
        bench.api.images().get(&bench.image).exists().await?,
        "image {} is missing: scripts/build-worker-image",
        bench.image
    );
    let idle = Duration::from_secs(args.idle_secs.unwrap_or(if args.quick { 10 } else { 30 }));
    let edits = if args.quick { 3 } else { 20 };

    let machine = machine(&bench);
    println!("machine:");
    for (k, v) in &machine {
        println!("  {k}: {v}");
    }
    let mut res = Results::default();
    if bench.compose.is_none() && bench.runs("compose") {
        res.notes
            .push("docker-compose: not installed, skipped".into());
        println!("docker-compose: not installed, skipped");
    }
    let outcome = tokio::select! {
        outcome = run_all(&bench, &mut res, &args.lanes, args.runs, idle, edits) => outcome,
        signal = signalled() => Err(anyhow!("interrupted by {signal}")),
    };
    // Whatever happened, leave no container of this run behind.
    let swept = remove_leftovers(&bench.api).await;

    let targets = targets(&res, &args.lanes);
    println!("\n{}", table(&res, &args.lanes));
    println!("targets (issues 5 and 11):");
    for t in &targets {
        let mark = match t.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "  -   ",
        };
        println!("  [{mark}] {}: {}", t.text, t.measured);
    }
    if let Some(path) = &args.json {
        let doc = report_json(&res, &args.lanes, args.runs, &machine, &targets);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    outcome?;
    swept
}

/// The first SIGINT or SIGTERM, so that the containers are removed before exiting.
async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// How often a failed measurement is tried. On a shared host Podman 4.3's
/// port forwarding fails now and then (a random host port handed out twice,
/// a probe that gets "no route to host"); a failure is reported, its samples
/// dropped, and the measurement made again on fresh containers.
const ATTEMPTS: usize = 3;

async fn run_all(
    bench: &Bench,
    res: &mut Results,
    lanes: &[usize],
    runs: usize,
    idle: Duration,
    edits: u32,
) -> Result<()> {
    let biggest = lanes.iter().copied().max().unwrap_or(0);
    let smallest = lanes.iter().copied().min().unwrap_or(0);
    warm_up(bench).await.context("warm-up lane")?;
    let mut failed = 0;
    for &n in lanes {
        let idle = (n == biggest).then_some(idle);
        // Run by run, each kind in turn, so that a change of the host's load
        // shows in every kind alike.
        for run in 0..runs {
            for kind in ["lanectl", "floor", "go", "compose", "rollout"] {
                // Rollouts are of one lane: measured beside the smallest N.
                let present = match kind {
                    "compose" => bench.compose.is_some(),
                    "rollout" => n == smallest,
                    _ => true,
                };
                if bench.runs(kind) && present {
                    let what = format!("N={n}, run {}/{runs}, {kind}", run + 1);
                    let step = Step {
                        n,
                        run,
                        runs,
                        idle,
                        edits,
                    };
                    let gave_up = attempts(bench, res, &what, kind, step).await;
                    // A peer that cannot do the job is a finding, not a
                    // failure of this benchmark (docker-compose 1.29 hangs
                    // with 100 services on Podman's socket).
                    if kind == "compose" && gave_up > 0 {
                        res.notes
                            .push(format!("{what}: docker-compose gave up; not measured"));
                    } else {
                        failed += gave_up;
                    }
                }
            }
        }
        // The daemon once per N: its samples are `runs` steps of one session.
        if bench.runs("daemon") {
            let what = format!("N={n}, lanectl run");
            let step = Step {
                n,
                run: 0,
                runs,
                idle,
                edits,
            };
            failed += attempts(bench, res, &what, "daemon", step).await;
        }
    }
    ensure!(
        failed == 0,
        "{failed} measurement(s) failed {ATTEMPTS} times"
    );
    Ok(())
}

/// Where a measurement stands: N lanes, run `run` of `runs`, and the idle
/// time to measure (the daemon at the largest N only).
#[derive(Clone, Copy)]
struct Step {
    n: usize,
    run: usize,
    runs: usize,
    idle: Option<Duration>,
    /// Edits per rollout measurement.
    edits: u32,
}

/// Up to [`ATTEMPTS`] tries of one measurement; 1 when all failed.
async fn attempts(bench: &Bench, res: &mut Results, what: &str, kind: &str, step: Step) -> usize {
    for attempt in 1..=ATTEMPTS {
        let saved = res.samples.clone();
        match measure(bench, res, kind, step).await {
            Ok(keys) => {
                progress(res, what, step.n, keys);
                return 0;
            }
            Err(e) => {
                res.samples = saved;
                let text = format!("{what}: attempt {attempt}/{ATTEMPTS} failed: {e:#}");
                eprintln!("{text}");
                res.notes.push(text);
            }
        }
    }
    1
}

/// One measurement of one kind; returns the rows it added to.
async fn measure(
    bench: &Bench,
    res: &mut Results,
    kind: &str,
    step: Step,
) -> Result<&'static [Key]> {
    let Step {
        n,
        run,
        runs,
        idle,
        edits,
    } = step;
    Ok(match kind {
        "lanectl" => {
            measure_lanectl(bench, res, n, run).await?;
            &[Key::LanectlCold, Key::LanectlNoop, Key::LanectlEdit]
        }
        "floor" => {
            measure_floor(bench, res, n, run).await?;
            &[Key::FloorCold, Key::FloorNoop, Key::FloorEdit]
        }
        "go" => {
            measure_go(bench, res, n, run).await?;
            &[Key::GoCold, Key::GoNoop, Key::GoEdit]
        }
        "compose" => {
            measure_compose(bench, res, n, run).await?;
            &[Key::ComposeCold, Key::ComposeNoop, Key::ComposeEdit]
        }
        "rollout" => {
            measure_rollouts(bench, res, n, run, edits).await?;
            &[
                Key::RolloutStopFailed,
                Key::RolloutStopGap,
                Key::RolloutStablePorts,
                Key::RolloutStartFailed,
                Key::RolloutStartGap,
                Key::RolloutStartServing,
                Key::RolloutComposeFailed,
                Key::RolloutComposeGap,
            ]
        }
        _ => {
            measure_daemon(bench, res, n, runs, idle).await?;
            &[
                Key::DaemonStart,
                Key::DaemonManifest,
                Key::DaemonRemoved,
                Key::DaemonRss,
                Key::DaemonCpu,
                Key::DaemonCpuQuiet,
                Key::DaemonRssMetrics,
                Key::DaemonCpuMetrics,
            ]
        }
    })
}

/// One lane made and removed before anything is timed: a fresh Podman
/// service pays first-use costs (network set-up, storage) on its first container.
async fn warm_up(bench: &Bench) -> Result<()> {
    let fleet = Fleet::new(bench, tag("warm", 1, 0), 1)?;
    let lane = FloorLane::new(bench, &fleet, &fleet.lanes[0], 0)?;
    let outcome = lane.converge(&bench.api).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}

/// The latest sample of each key, on stderr, as the benchmark goes.
fn progress(res: &Results, what: &str, n: usize, keys: &[Key]) {
    let mut line = String::new();
    for &key in keys {
        if let Some(v) = res.samples.get(&(n, key)).and_then(|v| v.last()) {
            let _ = write!(line, "; {}: {}", key.label(), show(key.unit(), *v));
        }
    }
    eprintln!("{what}{line}");
}
