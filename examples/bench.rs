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
//! `--quick`).
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, stream};
use podman_api::Podman;
use podman_api::models::{ContainerMount, PortMapping};
use podman_api::opts::{
    ContainerCreateOpts, ContainerDeleteOpts, ContainerListFilter, ContainerListOpts,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// Measurements to leave out, comma-separated: lanectl, daemon, floor, go, compose.
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

// --- what is measured ---------------------------------------------------------

/// One row of the table, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    LanectlCold,
    LanectlNoop,
    LanectlEdit,
    DaemonStart,
    DaemonManifest,
    DaemonRemoved,
    DaemonRss,
    DaemonCpu,
    DaemonCpuQuiet,
    FloorCold,
    FloorNoop,
    FloorEdit,
    FloorRemove,
    FloorOneLane,
    GoCold,
    GoNoop,
    GoEdit,
    ComposeCold,
    ComposeNoop,
    ComposeEdit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    MiB,
    Percent,
}

impl Key {
    fn label(self) -> &'static str {
        match self {
            Key::LanectlCold => "lanectl apply, cold",
            Key::LanectlNoop => "lanectl apply, no-op",
            Key::LanectlEdit => "lanectl apply, one env edit",
            Key::DaemonStart => "lanectl run: start → all ready",
            Key::DaemonManifest => "lanectl run: manifest written → ready",
            Key::DaemonRemoved => "lanectl run: rm -f → ready again",
            Key::DaemonRss => "lanectl run: idle RSS (max)",
            Key::DaemonCpu => "lanectl run: idle CPU (% of a core)",
            Key::DaemonCpuQuiet => "lanectl run: idle CPU, median second",
            Key::FloorCold => "floor: cold (create, copy, start, inspect, probe)",
            Key::FloorNoop => "floor: no-op (1 list + 1 probe per lane)",
            Key::FloorEdit => "floor: one edit (rm -f + one lane)",
            Key::FloorRemove => "floor: rm -f of one lane",
            Key::FloorOneLane => "floor: one lane create+copy+start+probe",
            Key::GoCold => "Go runtime's CLI sequence, cold",
            Key::GoNoop => "Go runtime's CLI sequence, no-op",
            Key::GoEdit => "Go runtime's CLI sequence, one edit",
            Key::ComposeCold => "docker-compose up -d, cold",
            Key::ComposeNoop => "docker-compose up -d, no-op",
            Key::ComposeEdit => "docker-compose up -d, one edit",
        }
    }

    fn id(self) -> String {
        let debug = format!("{self:?}");
        let mut id = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                id.push('_');
            }
            id.push(c.to_ascii_lowercase());
        }
        id
    }

    fn unit(self) -> Unit {
        match self {
            Key::DaemonRss => Unit::MiB,
            Key::DaemonCpu | Key::DaemonCpuQuiet => Unit::Percent,
            _ => Unit::Seconds,
        }
    }

    /// The floor a lanectl figure is divided by.
    fn floor(self) -> Option<Key> {
        match self {
            Key::LanectlCold | Key::DaemonStart => Some(Key::FloorCold),
            Key::LanectlNoop => Some(Key::FloorNoop),
            Key::LanectlEdit | Key::DaemonRemoved => Some(Key::FloorEdit),
            Key::DaemonManifest => Some(Key::FloorOneLane),
            _ => None,
        }
    }

    /// The peers doing the same work; the best (lowest median) is the ratio's base.
    fn peers(self) -> &'static [Key] {
        match self {
            Key::LanectlCold | Key::DaemonStart => &[Key::GoCold, Key::ComposeCold],
            Key::LanectlNoop => &[Key::GoNoop, Key::ComposeNoop],
            Key::LanectlEdit => &[Key::GoEdit, Key::ComposeEdit],
            _ => &[],
        }
    }
}

/// Every sample, by lane count and row.
#[derive(Default)]
struct Results {
    samples: BTreeMap<(usize, Key), Vec<f64>>,
    notes: Vec<String>,
}

impl Results {
    fn add(&mut self, n: usize, key: Key, value: f64) {
        self.samples.entry((n, key)).or_default().push(value);
    }

    fn add_time(&mut self, n: usize, key: Key, took: Duration) {
        self.add(n, key, took.as_secs_f64());
    }

    fn stats(&self, n: usize, key: Key) -> Option<Stats> {
        self.samples.get(&(n, key)).map(|v| Stats::of(v))
    }

    fn median(&self, n: usize, key: Key) -> Option<f64> {
        self.stats(n, key).map(|s| s.median)
    }

    fn ratio_to_floor(&self, n: usize, key: Key) -> Option<f64> {
        Some(self.median(n, key)? / self.median(n, key.floor()?)?)
    }

    /// (peer, ratio) against the peer with the lowest median.
    fn ratio_to_best_peer(&self, n: usize, key: Key) -> Option<(Key, f64)> {
        let best = key
            .peers()
            .iter()
            .filter_map(|&p| Some((p, self.median(n, p)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((best.0, self.median(n, key)? / best.1))
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

// --- the generated lanes ------------------------------------------------------

/// N lanes in a temporary directory (`lanes.d/`, `codex/<lane>/`,
/// `work/<lane>/`), owned by one measurement: `tag` names its containers
/// (`<tag>-<lane>`), labels them and is lanectl's `--instance`.
struct Fleet {
    root: tempfile::TempDir,
    tag: String,
    lanes: Vec<String>,
}

impl Fleet {
    fn new(bench: &Bench, tag: String, n: usize) -> Result<Fleet> {
        let root = tempfile::Builder::new()
            .prefix("lanectl-bench-")
            .tempdir()?;
        std::fs::create_dir(root.path().join("lanes.d"))?;
        let fleet = Fleet {
            root,
            tag,
            lanes: (0..n).map(|i| format!("lane-{i:03}")).collect(),
        };
        for lane in &fleet.lanes {
            fleet.add_lane(bench, lane)?;
        }
        Ok(fleet)
    }

    /// Writes a lane's codex and workspace and its manifest (revision 0).
    fn add_lane(&self, bench: &Bench, lane: &str) -> Result<()> {
        let codex = self.codex_dir(lane);
        std::fs::create_dir_all(codex.join("prompts"))?;
        std::fs::create_dir_all(self.work_dir(lane))?;
        std::fs::write(
            codex.join("auth.json"),
            format!("{{\"token\": \"bench-{lane}-{}\"}}\n", "x".repeat(160)),
        )?;
        std::fs::write(
            codex.join("config.toml"),
            format!(
                "model = \"bench\"\nlane = \"{lane}\"\n{}",
                "# pad\n".repeat(40)
            ),
        )?;
        std::fs::write(
            codex.join("prompts/system.md"),
            "You are a benchmark lane.\n".repeat(40),
        )?;
        self.write_manifest(bench, lane, 0)
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("lanes.d")
    }

    fn codex_dir(&self, lane: &str) -> PathBuf {
        self.root.path().join("codex").join(lane)
    }

    fn work_dir(&self, lane: &str) -> PathBuf {
        self.root.path().join("work").join(lane)
    }

    fn container(&self, lane: &str) -> String {
        format!("{}-{lane}", self.tag)
    }

    /// The 4 env vars; `revision` is what an "edit" changes.
    fn env(lane: &str, revision: u32) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("INBOX_LANE_ID".into(), lane.into()),
            ("INBOX_WORKSPACE".into(), "/workspace".into()),
            (
                "INBOX_API_URL".into(),
                "http://host.containers.internal:8080".into(),
            ),
            ("BENCH_REVISION".into(), revision.to_string()),
        ])
    }

    fn write_manifest(&self, bench: &Bench, lane: &str, revision: u32) -> Result<()> {
        let mut env = String::new();
        for (k, v) in Self::env(lane, revision) {
            writeln!(env, "  {k}: \"{v}\"")?;
        }
        let yaml = format!(
            "image: {image}\n\
             container_name: {name}\n\
             user: root\n\
             entrypoint: [{WORKER_TARGET}]\n\
             command: [serve]\n\
             workdir: /workspace\n\
             env:\n{env}\
             labels: {{{BENCH_LABEL}: {tag}}}\n\
             mounts:\n\
             \x20 - {{source: {worker}, target: {WORKER_TARGET}, read_only: true}}\n\
             \x20 - {{source: ../work/{lane}, target: /workspace}}\n\
             ports: [{{container: {PORT}, host_ip: 127.0.0.1}}]\n\
             codex: {{source: ../codex/{lane}, target: /root/.codex, fingerprint_env: INBOX_RUNTIME_CODEX_SHA}}\n\
             probe: {{port: {PORT}, path: {PROBE_PATH}, timeout: 30s, interval: 50ms}}\n\
             stop_timeout: 2s\n",
            image = bench.image,
            name = self.container(lane),
            tag = self.tag,
            worker = bench.worker.display(),
        );
        let path = self.dir().join(format!("{lane}.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))
    }

    fn status(&self, lane: &str) -> Option<LaneStatus> {
        let path = self.dir().join(format!("{lane}.status.yaml"));
        LaneStatus::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// The codex files in the Go runtime's order: (relative path, bytes).
    fn codex_files(&self, lane: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = self.codex_dir(lane);
        let mut files = Vec::new();
        for rel in ["auth.json", "config.toml", "prompts/system.md"] {
            files.push((rel.to_string(), std::fs::read(dir.join(rel))?));
        }
        files.sort();
        Ok(files)
    }
}

/// The codex fingerprint (the Go runtime's algorithm: path, 0, bytes, 0 per file).
fn fingerprint(files: &[(String, Vec<u8>)]) -> String {
    let mut sum = Sha256::new();
    for (rel, bytes) in files {
        sum.update(rel.as_bytes());
        sum.update([0]);
        sum.update(bytes);
        sum.update([0]);
    }
    hex::encode(sum.finalize())
}

/// The phase and container ID of a status file (lanectl writes one key per line).
struct LaneStatus {
    phase: String,
    container_id: Option<String>,
}

impl LaneStatus {
    fn parse(text: &str) -> Option<LaneStatus> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        Some(LaneStatus {
            phase: field("phase")?,
            container_id: field("container_id"),
        })
    }

    fn ready(&self) -> bool {
        self.phase == "ready"
    }
}

// --- helpers ------------------------------------------------------------------

/// A peer's three timed passes over a fleet: cold, the same again (no-op),
/// and with lane 0 at revision 1 (one edit); `pass(r)` makes one pass with
/// lane 0 at revision `r`. Samples are kept only when all three succeed.
async fn three_passes<F, Fut>(res: &mut Results, n: usize, keys: [Key; 3], pass: F) -> Result<()>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut took = Vec::new();
    for revision in [0, 0, 1] {
        took.push(timed(pass(revision)).await?.1);
    }
    for (key, t) in keys.into_iter().zip(took) {
        res.add_time(n, key, t);
    }
    Ok(())
}

async fn timed<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = tokio::time::timeout(MEASUREMENT_LIMIT, work)
        .await
        .map_err(|_| anyhow!("gave up after {MEASUREMENT_LIMIT:?}"))??;
    Ok((value, start.elapsed()))
}

/// GETs `http://127.0.0.1:<port><path>` until a 2xx answer.
async fn probe(port: u16) -> Result<()> {
    let deadline = Instant::now() + PROBE_BUDGET;
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(2), http_status(port)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => format!("answered {code}"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2s".into(),
        };
        if Instant::now() >= deadline {
            bail!("probe of 127.0.0.1:{port}{PROBE_PATH} not ready: {last}");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

async fn http_status(port: u16) -> Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {PROBE_PATH} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while head.len() < 12 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {head:?}"))
}

fn list_opts(filter: ContainerListFilter) -> ContainerListOpts {
    ContainerListOpts::builder()
        .all(true)
        .filter([filter])
        .build()
}

/// The host port published for the worker's port, from a list entry.
fn listed_port(c: &podman_api::models::ListContainer) -> Option<u16> {
    c.ports
        .as_ref()?
        .iter()
        .find(|p| p.container_port == Some(PORT))?
        .host_port
}

/// Removes every container carrying `lanectl-bench=<tag>`, 8 at a time.
async fn remove_tagged(api: &Podman, tag: &str) -> Result<()> {
    let filter = ContainerListFilter::LabelKeyVal(BENCH_LABEL.into(), tag.into());
    let found = api.containers().list(&list_opts(filter)).await?;
    remove_all(api, found.into_iter().filter_map(|c| c.id).collect()).await
}

async fn remove_all(api: &Podman, ids: Vec<String>) -> Result<()> {
    let force = ContainerDeleteOpts::builder().force(true).build();
    stream::iter(ids)
        .map(|id| {
            let force = &force;
            async move { api.containers().get(&id).delete(force).await }
        })
        .buffer_unordered(JOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Removes whatever this process left behind (its tags start with `b<pid>-`).
async fn remove_leftovers(api: &Podman) -> Result<()> {
    let prefix = format!("b{}-", std::process::id());
    let found = api
        .containers()
        .list(&list_opts(ContainerListFilter::LabelKey(
            BENCH_LABEL.into(),
        )))
        .await?;
    let ours = found
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(BENCH_LABEL))
                .is_some_and(|v| v.starts_with(&prefix))
        })
        .filter_map(|c| c.id)
        .collect();
    remove_all(api, ours).await
}

fn tag(kind: &str, n: usize, run: usize) -> String {
    format!("b{}-{kind}{n}r{run}", std::process::id())
}

// --- lanectl apply --------------------------------------------------------------

async fn lanectl_apply(bench: &Bench, fleet: &Fleet) -> Result<()> {
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

async fn measure_lanectl(bench: &Bench, res: &mut Results, n: usize, run: usize) -> Result<()> {
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

// --- the floor ------------------------------------------------------------------

/// lanectl's labels on a container (values of the same shape), plus the bench's.
fn floor_labels(fleet: &Fleet, lane: &str, fp: &str) -> BTreeMap<String, String> {
    let hash = |what: &str| hex::encode(Sha256::digest(format!("{lane}/{what}")));
    BTreeMap::from([
        (BENCH_LABEL.into(), fleet.tag.clone()),
        ("io.lanectl.managed-by".into(), "lanectl".into()),
        ("io.lanectl.instance".into(), fleet.tag.clone()),
        ("io.lanectl.lane".into(), lane.into()),
        (
            "io.lanectl.spec-hash".into(),
            format!("sha256:{}", hash("spec")),
        ),
        ("io.lanectl.config-hash".into(), hash("config")),
        ("io.lanectl.image-id".into(), hash("image")),
        ("io.lanectl.tracked-hash".into(), hash("tracked")),
        ("io.lanectl.codex-fingerprint".into(), fp.into()),
    ])
}

/// What the floor sends for one lane: the create body and the codex tar.
struct FloorLane {
    port_key: String,
    create: ContainerCreateOpts,
    tar: Vec<u8>,
}

impl FloorLane {
    /// The body lanectl sends for this lane's manifest (see `podman.rs`'s `create_opts`).
    fn new(bench: &Bench, fleet: &Fleet, lane: &str, revision: u32) -> Result<FloorLane> {
        let files = fleet.codex_files(lane)?;
        let fp = fingerprint(&files);
        let mut env = Fleet::env(lane, revision);
        env.insert("INBOX_RUNTIME_CODEX_SHA".into(), fp.clone());
        let mount = |source: &Path, target: &str, ro: bool| ContainerMount {
            destination: Some(target.into()),
            source: Some(source.display().to_string()),
            _type: Some("bind".into()),
            options: Some(vec![
                "rbind".into(),
                if ro { "ro" } else { "rw" }.into(),
                "z".into(),
            ]),
            uid_mappings: None,
            gid_mappings: None,
        };
        let create = ContainerCreateOpts::builder()
            .name(fleet.container(lane))
            .image(&bench.image)
            .env(&env)
            .labels(&floor_labels(fleet, lane, &fp))
            .stop_timeout(2)
            .user("root")
            .entrypoint([WORKER_TARGET])
            .command(["serve"])
            .work_dir("/workspace")
            .mounts([
                mount(&bench.worker, WORKER_TARGET, true),
                mount(&fleet.work_dir(lane), "/workspace", false),
            ])
            .portmappings([PortMapping {
                container_port: Some(PORT),
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                protocol: Some("tcp".into()),
                range: None,
            }])
            .build();
        Ok(FloorLane {
            port_key: format!("{PORT}/tcp"),
            create,
            tar: codex_tar(&files)?,
        })
    }

    /// create, archive copy, start, inspect for the port, probe. Podman 4.3
    /// can hand one random host port to two containers; the start of the
    /// second then fails and, as lanectl does, the container is made anew.
    async fn converge(&self, api: &Podman) -> Result<()> {
        let mut attempt = 1;
        let id = loop {
            let id = api.containers().create(&self.create).await?.id;
            let container = api.containers().get(&id);
            container
                .copy_to("/", hyper::Body::from(self.tar.clone()))
                .await?;
            match container.start(None).await {
                Ok(()) => break id,
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    let force = ContainerDeleteOpts::builder().force(true).build();
                    container.delete(&force).await?;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let container = api.containers().get(&id);
        let info = container.inspect().await?;
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(&self.port_key).flatten())
            .and_then(|hosts| hosts.into_iter().find_map(|h| h.host_port?.parse().ok()))
            .ok_or_else(|| anyhow!("container {id} publishes no {}", self.port_key))?;
        probe(port).await
    }
}

/// The codex files under `root/.codex/`, owned by root, as lanectl sends them.
fn codex_tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    entry("root/.codex", tar::EntryType::Directory, 0o700, &[])?;
    entry("root/.codex/prompts", tar::EntryType::Directory, 0o700, &[])?;
    for (rel, bytes) in files {
        entry(
            &format!("root/.codex/{rel}"),
            tar::EntryType::Regular,
            0o644,
            bytes,
        )?;
    }
    Ok(tar.into_inner()?)
}

async fn floor_noop(api: &Podman, fleet: &Fleet) -> Result<()> {
    let filter = ContainerListFilter::LabelKeyVal(BENCH_LABEL.into(), fleet.tag.clone());
    let listed = api.containers().list(&list_opts(filter)).await?;
    ensure!(listed.len() == fleet.lanes.len(), "floor: lanes missing");
    let ports: Vec<u16> = listed.iter().filter_map(listed_port).collect();
    stream::iter(ports)
        .map(probe)
        .buffer_unordered(JOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn measure_floor(bench: &Bench, res: &mut Results, n: usize, run: usize) -> Result<()> {
    let fleet = Fleet::new(bench, tag("fl", n, run), n)?;
    let api = &bench.api;
    let outcome = async {
        // Bodies and tars are made before the clock starts: no lanectl logic is timed.
        let lanes = fleet
            .lanes
            .iter()
            .map(|lane| FloorLane::new(bench, &fleet, lane, 0))
            .collect::<Result<Vec<_>>>()?;
        let cold = stream::iter(&lanes)
            .map(|lane| lane.converge(api))
            .buffer_unordered(JOBS)
            .try_collect::<Vec<()>>();
        let (_, cold) = timed(cold).await?;
        let ((), noop) = timed(floor_noop(api, &fleet)).await?;
        let edited = FloorLane::new(bench, &fleet, &fleet.lanes[0], 1)?;
        let force = ContainerDeleteOpts::builder().force(true).build();
        let name = fleet.container(&fleet.lanes[0]);
        let remove =
            async { Ok::<(), anyhow::Error>(api.containers().get(&name).delete(&force).await?) };
        let ((), removed) = timed(remove).await?;
        let ((), one) = timed(edited.converge(api)).await?;
        res.add_time(n, Key::FloorCold, cold);
        res.add_time(n, Key::FloorNoop, noop);
        res.add_time(n, Key::FloorEdit, removed + one);
        res.add_time(n, Key::FloorRemove, removed);
        res.add_time(n, Key::FloorOneLane, one);
        Ok(())
    }
    .await;
    remove_tagged(api, &fleet.tag).await?;
    outcome
}

// --- the Go runtime's CLI sequence ------------------------------------------------

/// `podman --remote --url <url> args...`: (success, stdout, stderr).
async fn podman_cli(bench: &Bench, args: &[&str]) -> Result<(bool, String, String)> {
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

async fn podman_ok(bench: &Bench, args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = podman_cli(bench, args).await?;
    ensure!(ok, "podman {}: {}", args.join(" "), stderr.trim());
    Ok(stdout)
}

/// `ensureLaneContainer` of the Go runtime, call for call. `revision` is the
/// env the lane wants: another one in the inspect output is what its
/// `laneDrifted()` finds after an edit.
async fn go_ensure_lane(bench: &Bench, fleet: &Fleet, lane: &str, revision: u32) -> Result<()> {
    let name = fleet.container(lane);
    podman_ok(bench, &["image", "exists", &bench.image]).await?;
    let fp = fingerprint(&fleet.codex_files(lane)?);
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

async fn go_inspect(bench: &Bench, name: &str) -> Result<Option<Value>> {
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
async fn go_pass(bench: &Bench, fleet: &Fleet, edited: u32) -> Result<()> {
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

async fn measure_go(bench: &Bench, res: &mut Results, n: usize, run: usize) -> Result<()> {
    let fleet = Fleet::new(bench, tag("go", n, run), n)?;
    let keys = [Key::GoCold, Key::GoNoop, Key::GoEdit];
    let outcome = three_passes(res, n, keys, |edited| go_pass(bench, &fleet, edited)).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}

// --- docker-compose -----------------------------------------------------------------

/// `docker-compose`, else the `docker compose` plugin; never installed here.
fn find_compose() -> Option<Vec<String>> {
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

fn compose_file(bench: &Bench, fleet: &Fleet, edited: u32) -> String {
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

async fn compose(bench: &Bench, fleet: &Fleet, args: &[&str]) -> Result<()> {
    let cmd = bench.compose.as_ref().expect("compose found");
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
async fn compose_up(bench: &Bench, fleet: &Fleet, edited: u32) -> Result<()> {
    std::fs::write(
        fleet.root.path().join("compose.yaml"),
        compose_file(bench, fleet, edited),
    )?;
    compose(bench, fleet, &["up", "-d"]).await?;
    let filter = ContainerListFilter::LabelKeyVal(BENCH_LABEL.into(), fleet.tag.clone());
    let listed = bench.api.containers().list(&list_opts(filter)).await?;
    let ports: Vec<u16> = listed.iter().filter_map(listed_port).collect();
    ensure!(ports.len() == fleet.lanes.len(), "compose: ports missing");
    stream::iter(ports)
        .map(probe)
        .buffer_unordered(JOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn measure_compose(bench: &Bench, res: &mut Results, n: usize, run: usize) -> Result<()> {
    let fleet = Fleet::new(bench, tag("dc", n, run), n)?;
    let keys = [Key::ComposeCold, Key::ComposeNoop, Key::ComposeEdit];
    let outcome = three_passes(res, n, keys, |edited| compose_up(bench, &fleet, edited)).await;
    let down = compose(bench, &fleet, &["down", "-t", "1"]).await;
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome.and(down)
}

// --- lanectl run ----------------------------------------------------------------------

/// `lanectl run` on a fleet; SIGKILLed on drop if still running.
struct Daemon {
    child: tokio::process::Child,
    pid: i32,
}

impl Daemon {
    fn start(bench: &Bench, fleet: &Fleet) -> Result<Daemon> {
        let log = std::fs::File::create(fleet.root.path().join("daemon.log"))?;
        let mut command = tokio::process::Command::new(&bench.lanectl);
        command
            .arg("--dir")
            .arg(fleet.dir())
            .args(["--instance", &fleet.tag, "--jobs", &JOBS.to_string(), "run"])
            .env("CONTAINER_HOST", &bench.url)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe, all that pre_exec asks. With it
        // the daemon dies with the benchmark however the benchmark ends.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().context("start lanectl run")?;
        let pid = child.id().ok_or_else(|| anyhow!("lanectl run exited"))? as i32;
        Ok(Daemon { child, pid })
    }

    /// SIGTERM, then up to 10 s for a clean exit.
    async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let waited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        ensure!(
            matches!(waited, Ok(Ok(s)) if s.success()),
            "lanectl run did not exit 0 on SIGTERM: {waited:?}"
        );
        Ok(())
    }

    fn alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("lanectl run exited: {status}"),
        }
    }

    /// (utime + stime in seconds, VmRSS in MiB) from /proc.
    fn usage(&self) -> Result<(f64, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces): state is field 3.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))?;
        Ok((ticks / hz, rss_kib / 1024.0))
    }
}

/// Polls until `done` holds, checking that the daemon still runs.
async fn wait_until(
    daemon: &mut Daemon,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + MEASUREMENT_LIMIT;
    while !done() {
        daemon.alive()?;
        ensure!(
            Instant::now() < deadline,
            "gave up after {MEASUREMENT_LIMIT:?}"
        );
        tokio::time::sleep(every).await;
    }
    Ok(())
}

async fn measure_daemon(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    runs: usize,
    idle: Option<Duration>,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("run", n, 0), n)?;
    let outcome = async {
        let start = Instant::now();
        let mut daemon = Daemon::start(bench, &fleet)?;
        let all_ready = || {
            fleet
                .lanes
                .iter()
                .all(|l| fleet.status(l).is_some_and(|s| s.ready()))
        };
        wait_until(&mut daemon, Duration::from_millis(50), all_ready).await?;
        res.add_time(n, Key::DaemonStart, start.elapsed());
        for run in 0..runs {
            // Let the events of the previous step die down.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let lane = format!("new-{run}");
            let start = Instant::now();
            fleet.add_lane(bench, &lane)?;
            let ready = || fleet.status(&lane).is_some_and(|s| s.ready());
            wait_until(&mut daemon, Duration::from_millis(5), ready).await?;
            res.add_time(n, Key::DaemonManifest, start.elapsed());

            tokio::time::sleep(Duration::from_millis(500)).await;
            let victim = &fleet.lanes[run % n];
            let old = fleet.status(victim).and_then(|s| s.container_id);
            let old = old.ok_or_else(|| anyhow!("{victim}: no container_id"))?;
            let force = ContainerDeleteOpts::builder().force(true).build();
            let start = Instant::now();
            bench.api.containers().get(&old).delete(&force).await?;
            let replaced = || {
                fleet
                    .status(victim)
                    .is_some_and(|s| s.ready() && s.container_id.as_ref() != Some(&old))
            };
            wait_until(&mut daemon, Duration::from_millis(5), replaced).await?;
            res.add_time(n, Key::DaemonRemoved, start.elapsed());
        }
        if let Some(idle) = idle {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (cpu0, mut rss) = daemon.usage()?;
            let (start, mut last, mut per_second) = (Instant::now(), cpu0, Vec::new());
            while start.elapsed() < idle {
                tokio::time::sleep(Duration::from_secs(1)).await;
                daemon.alive()?;
                let (cpu, now_rss) = daemon.usage()?;
                per_second.push((cpu - last) * 100.0);
                (last, rss) = (cpu, rss.max(now_rss));
            }
            let cpu = (last - cpu0) / start.elapsed().as_secs_f64() * 100.0;
            res.add(n, Key::DaemonRss, rss);
            res.add(n, Key::DaemonCpu, cpu);
            // Busy polling shows in every second; a resync only in a few.
            res.add(n, Key::DaemonCpuQuiet, Stats::of(&per_second).median);
            res.notes.push(format!(
                "daemon idle CPU per second with {n} lanes (%): {per_second:?}"
            ));
        }
        daemon.stop().await
    }
    .await;
    if outcome.is_err() {
        let log = std::fs::read_to_string(fleet.root.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "lanectl run's log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    remove_tagged(&bench.api, &fleet.tag).await?;
    outcome
}

// --- output ---------------------------------------------------------------------------

fn machine(bench: &Bench) -> BTreeMap<&'static str, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_default();
    let cli = |args: &[&str]| {
        std::process::Command::new("podman")
            .args(["--remote", "--url", &bench.url])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let git = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    BTreeMap::from([
        (
            "nproc",
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("cpu", cpu),
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        (
            "podman",
            cli(&["version", "--format", "{{.Server.Version}}"]),
        ),
        (
            "oci_runtime",
            cli(&["info", "--format", "{{.Host.OCIRuntime.Name}}"]),
        ),
        ("loadavg_at_start", read("/proc/loadavg").trim().to_string()),
        ("lanectl", git),
    ])
}

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::MiB => format!("{v:.1} MiB"),
        Unit::Percent => format!("{v:.2} %"),
    }
}

fn table(res: &Results, lanes: &[usize]) -> String {
    let mut out = String::from(
        "| N | measurement | median | min | max | × floor | × best peer |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for &n in lanes {
        for (&(m, key), values) in &res.samples {
            if m != n {
                continue;
            }
            let s = Stats::of(values);
            let unit = key.unit();
            let floor = res
                .ratio_to_floor(n, key)
                .map_or(String::new(), |r| format!("{r:.2}x"));
            let peer = match (res.ratio_to_best_peer(n, key), key.peers().is_empty()) {
                (Some((p, r)), _) => format!("{r:.2}x ({})", short_peer(p)),
                (None, false) => "no peer".into(),
                (None, true) => String::new(),
            };
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {floor} | {peer} |",
                key.label(),
                show(unit, s.median),
                show(unit, s.min),
                show(unit, s.max),
            );
        }
    }
    out
}

fn short_peer(key: Key) -> &'static str {
    match key {
        Key::GoCold | Key::GoNoop | Key::GoEdit => "Go",
        _ => "compose",
    }
}

/// One of the issue's targets against this run: (text, measured, met).
struct Target {
    text: String,
    measured: String,
    met: Option<bool>,
}

/// The issue's targets, judged at the N they name when it was measured; else
/// the figure at the nearest N measured is shown, unjudged.
fn targets(res: &Results, lanes: &[usize]) -> Vec<Target> {
    let nearest = |want: usize| {
        let n = *lanes
            .iter()
            .min_by_key(|&&n| n.abs_diff(want))
            .unwrap_or(&want);
        (
            n,
            if n == want {
                String::new()
            } else {
                format!("at N={n}: ")
            },
        )
    };
    let m = |n: usize, k: Key| res.median(n, k);
    let ms = |v: f64| format!("{:.0} ms", v * 1000.0);
    let mut out = Vec::new();
    // Judged only at the N the target names; elsewhere the figure is shown.
    let mut check = |text: &str, measured: Option<(String, bool)>| {
        let judged = measured.as_ref().is_some_and(|m| !m.0.starts_with("at N="));
        out.push(Target {
            text: text.into(),
            met: measured.as_ref().filter(|_| judged).map(|m| m.1),
            measured: measured.map_or_else(|| "not measured".into(), |m| m.0),
        });
    };
    let (n, at) = nearest(30);
    let one = m(n, Key::FloorOneLane);
    check(
        "cold apply, 30 lanes with codex + probe ≤ 1.10x the floor",
        res.ratio_to_floor(n, Key::LanectlCold).map(|r| {
            let floor = m(n, Key::FloorCold).unwrap_or_default();
            (format!("{at}{r:.2}x (floor {floor:.2} s)"), r <= 1.10)
        }),
    );
    check(
        "no-op apply of 30 lanes ≤ 50 ms",
        m(n, Key::LanectlNoop).map(|v| {
            let floor =
                m(n, Key::FloorNoop).map_or(String::new(), |f| format!(" (floor {})", ms(f)));
            (format!("{at}{}{floor}", ms(v)), v <= 0.050)
        }),
    );
    check(
        "no-op apply of 30 lanes ≥ 25x faster than docker-compose",
        m(n, Key::ComposeNoop)
            .zip(m(n, Key::LanectlNoop))
            .map(|(c, l)| (format!("{at}{:.1}x", c / l), c / l >= 25.0)),
    );
    check(
        "one edit of 30 → ready ≤ the lane's stop time + 1.2x one lane's create+copy+start+probe",
        m(n, Key::LanectlEdit)
            .zip(m(n, Key::FloorRemove))
            .zip(one)
            .map(|((e, stop), one)| {
                let limit = stop + 1.2 * one;
                (format!("{at}{} (limit {})", ms(e), ms(limit)), e <= limit)
            }),
    );
    check(
        "daemon: manifest written → ready ≤ debounce (30 ms once the file is closed) + 1.2x one lane's converge",
        m(n, Key::DaemonManifest).zip(one).map(|(v, one)| {
            let limit = 0.030 + 1.2 * one;
            (format!("{at}{} (limit {})", ms(v), ms(limit)), v <= limit)
        }),
    );
    check(
        "daemon: podman rm -f → ready ≤ 1 s",
        m(n, Key::DaemonRemoved).map(|v| (format!("{at}{}", ms(v)), v <= 1.0)),
    );
    let (n, at) = nearest(300);
    check(
        "no-op apply of 300 lanes ≤ 250 ms",
        m(n, Key::LanectlNoop).map(|v| {
            let floor =
                m(n, Key::FloorNoop).map_or(String::new(), |f| format!(" (floor {})", ms(f)));
            (format!("{at}{}{floor}", ms(v)), v <= 0.250)
        }),
    );
    // The daemon's idle is measured at the largest N only.
    let idle_n = res
        .samples
        .keys()
        .find(|(_, k)| *k == Key::DaemonRss)
        .map(|(n, _)| *n);
    let at = idle_n
        .filter(|&n| n != 100)
        .map_or(String::new(), |n| format!("at N={n}: "));
    let idle = |k: Key| idle_n.and_then(|n| m(n, k));
    check(
        "daemon idle with 100 lanes: RSS ≤ 15 MB",
        idle(Key::DaemonRss).map(|v| {
            let mb = v * 1.048_576;
            (format!("{at}{v:.1} MiB = {mb:.1} MB"), mb <= 15.0)
        }),
    );
    check(
        "daemon idle with 100 lanes: CPU ≤ 1% (no busy polling)",
        idle(Key::DaemonCpu).map(|v| {
            let quiet = idle(Key::DaemonCpuQuiet).unwrap_or_default();
            (
                format!("{at}{v:.2} % (median second {quiet:.2} %)"),
                v <= 1.0,
            )
        }),
    );
    check(
        "unchanged codex dir of 1 000 files re-fingerprinted ≤ 5 ms; hashing ≥ 500 MB/s",
        None,
    );
    out
}

fn report_json(
    res: &Results,
    lanes: &[usize],
    runs: usize,
    machine: &BTreeMap<&'static str, String>,
    targets: &[Target],
) -> Value {
    let rows: Vec<Value> = res
        .samples
        .iter()
        .filter(|((n, _), _)| lanes.contains(n))
        .map(|(&(n, key), values)| {
            let s = Stats::of(values);
            let peer = res.ratio_to_best_peer(n, key);
            json!({
                "lanes": n,
                "key": key.id(),
                "label": key.label(),
                "unit": match key.unit() { Unit::Seconds => "s", Unit::MiB => "MiB", Unit::Percent => "%" },
                "samples": values,
                "median": s.median,
                "min": s.min,
                "max": s.max,
                "floor": key.floor().map(Key::id),
                "ratio_to_floor": res.ratio_to_floor(n, key),
                "best_peer": peer.map(|p| p.0.id()),
                "ratio_to_best_peer": peer.map(|p| p.1),
            })
        })
        .collect();
    json!({
        "machine": machine,
        "config": {
            "lanes": lanes,
            "runs": runs,
            "jobs": JOBS,
            "probe_interval_ms": PROBE_INTERVAL.as_millis() as u64,
        },
        "rows": rows,
        "targets": targets.iter().map(|t| json!({
            "target": t.text, "measured": t.measured, "met": t.met,
        })).collect::<Vec<_>>(),
        "notes": res.notes,
    })
}

// --- main ---------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.lanes = vec![10];
        args.runs = 1;
    }
    ensure!(args.runs > 0, "--runs must be at least 1");
    let known = ["lanectl", "daemon", "floor", "go", "compose"];
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
        outcome = run_all(&bench, &mut res, &args.lanes, args.runs, idle) => outcome,
        signal = signalled() => Err(anyhow!("interrupted by {signal}")),
    };
    // Whatever happened, leave no container of this run behind.
    let swept = remove_leftovers(&bench.api).await;

    let targets = targets(&res, &args.lanes);
    println!("\n{}", table(&res, &args.lanes));
    println!("targets (issue 5):");
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
) -> Result<()> {
    let biggest = lanes.iter().copied().max().unwrap_or(0);
    warm_up(bench).await.context("warm-up lane")?;
    let mut failed = 0;
    for &n in lanes {
        let idle = (n == biggest).then_some(idle);
        // Run by run, each kind in turn, so that a change of the host's load
        // shows in every kind alike.
        for run in 0..runs {
            for kind in ["lanectl", "floor", "go", "compose"] {
                let present = kind != "compose" || bench.compose.is_some();
                if bench.runs(kind) && present {
                    let what = format!("N={n}, run {}/{runs}, {kind}", run + 1);
                    let step = Step { n, run, runs, idle };
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
    let Step { n, run, runs, idle } = step;
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
        _ => {
            measure_daemon(bench, res, n, runs, idle).await?;
            &[
                Key::DaemonStart,
                Key::DaemonManifest,
                Key::DaemonRemoved,
                Key::DaemonRss,
                Key::DaemonCpu,
                Key::DaemonCpuQuiet,
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
