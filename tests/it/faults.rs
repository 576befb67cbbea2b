//! The fault suite of issue 4: lanectl killed with SIGKILL at many points of
//! an apply, the Podman service killed and restarted under the daemon, status
//! files read thousands of times while lanes churn, and the lanes directory
//! taken away or emptied under the daemon. Each test prints the figures it
//! saw; the kill points are pseudo-random but seeded, so a run can be repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Daemon, Lanes, OwnPodman, host, podman_output, try_inspect, wait_for};
use crate::converge::sha256_hex;

/// A deterministic generator (Knuth's MMIX LCG): the same seed gives the
/// same kill points on every run.
struct Lcg(u64);

impl Lcg {
    /// Seeds through splitmix64's mixer, so that neighbouring seeds (the
    /// iterations of a loop) do not give neighbouring numbers.
    fn new(seed: u64) -> Lcg {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Lcg(z ^ (z >> 31))
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// GET on a worker; `None` unless it answers 200 within a few seconds.
fn try_get(base: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `podman inspect` of every container of an instance, in one call; retried
/// when a container vanishes between the list and the inspect.
fn inspect_instance(lanes: &Lanes) -> Vec<Value> {
    for _ in 0..10 {
        let ids = lanes.containers();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["container", "inspect"];
        args.extend(ids.iter().map(String::as_str));
        let out = podman_output(&args);
        if out.status.success() {
            let all: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
            return all.as_array().cloned().unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cannot inspect the containers of {}", lanes.instance)
}

fn label<'a>(container: &'a Value, key: &str) -> &'a str {
    container["Config"]["Labels"][key].as_str().unwrap_or("")
}

fn env_has(container: &Value, entry: &str) -> bool {
    container["Config"]["Env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e == entry))
}

/// Files in the lanes dir that are neither a manifest nor a status file
/// (a temporary status file left behind, say).
fn stray_files(dir: &Path) -> Vec<String> {
    let mut stray: Vec<String> = std::fs::read_dir(dir)
        .expect("read the lanes dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with('.') || !name.ends_with(".yaml"))
        .collect();
    stray.sort();
    stray
}

/// The codex files a worker reports: path -> sha256.
fn reported_codex(report: &Value) -> BTreeMap<String, String> {
    report["codex_files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("").to_string(),
                f["sha256"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const WORKERS: [&str; 5] = ["w0", "w1", "w2", "w3", "w4"];

/// A worker's codex files at a version: two or three files, one of them in
/// a subdirectory.
fn codex_of(lane: &str, version: u64) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "config.toml".to_string(),
            format!("lane = \"{lane}\"\nversion = {version}\n"),
        ),
        (
            "auth.json".to_string(),
            format!("{{\"token\": \"t-{lane}\"}}\n"),
        ),
    ];
    if lane < "w3" {
        files.push((
            "prompts/system.md".to_string(),
            format!("You are lane {lane}.\n"),
        ));
    }
    if lane == "w2" {
        // 2 MiB: its copy takes long enough for kills to land in it.
        files.push((
            "blob.txt".to_string(),
            format!("{lane} {version}\n{}", "0123456789abcdef\n".repeat(1 << 17)),
        ));
    }
    files
}

fn codex_hashes(lane: &str, version: u64) -> BTreeMap<String, String> {
    codex_of(lane, version)
        .into_iter()
        .map(|(path, text)| (path, sha256_hex(text.as_bytes())))
        .collect()
}

/// What a normal apply after some kills found wrong.
#[derive(Default)]
struct Audit {
    duplicates: usize,
    half_made: usize,
    stale_status: usize,
    stray: usize,
    problems: Vec<String>,
    /// Which kill came last before the audit, and when (for the evidence).
    last_kill: String,
}

/// Runs a normal apply and checks the whole directory: one container per
/// lane with a manifest and none for others, every lane ready on the current
/// spec with its codex inside, no stray files, no status file that lies.
fn audit_after_apply(
    lanes: &Lanes,
    present: &BTreeSet<&str>,
    v: u64,
    version: u64,
    audit: &mut Audit,
) {
    let mut run = lanes.lanectl(&["apply"]);
    // A probe that times out on a loaded machine is re-probed by the next
    // pass (SPEC): readiness gets one more pass, the invariants do not.
    if run.code != 0
        && run
            .stdout
            .lines()
            .all(|l| l.contains(" ready ") || l.contains("failed: probe"))
    {
        run = lanes.lanectl(&["apply"]);
    }
    let containers = inspect_instance(lanes);
    if run.code != 0 {
        let seen: Vec<String> = containers
            .iter()
            .map(|c| {
                format!(
                    "{} lane {} {} created {} started {}",
                    c["Id"].as_str().unwrap_or("?").get(..12).unwrap_or("?"),
                    label(c, "io.lanectl.lane"),
                    c["State"]["Status"],
                    c["Created"],
                    c["State"]["StartedAt"]
                )
            })
            .collect();
        audit.problems.push(format!(
            "apply after kills ({}): {run:?}\ncontainers after it:\n{}",
            audit.last_kill,
            seen.join("\n")
        ));
    }
    let mut by_lane: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in &containers {
        by_lane
            .entry(label(c, "io.lanectl.lane").to_string())
            .or_default()
            .push(c);
    }
    for (lane, cs) in &by_lane {
        if cs.len() > 1 {
            audit.duplicates += cs.len() - 1;
            audit
                .problems
                .push(format!("lane {lane} has {} containers", cs.len()));
        }
        if !present.contains(lane.as_str()) {
            audit
                .problems
                .push(format!("lane {lane} has no manifest but a container"));
        }
    }
    let stray = stray_files(&lanes.dir());
    if !stray.is_empty() {
        audit.stray += stray.len();
        audit.problems.push(format!("stray files: {stray:?}"));
    }
    let by_id: BTreeMap<&str, &Value> = containers
        .iter()
        .map(|c| (c["Id"].as_str().unwrap_or(""), c))
        .collect();
    for lane in WORKERS {
        let status = lanes.status(lane);
        if !present.contains(lane) {
            if status.is_some() {
                audit.stale_status += 1;
                audit
                    .problems
                    .push(format!("lane {lane} has no manifest but a status file"));
            }
            continue;
        }
        let Some(status) = status else {
            audit.problems.push(format!("lane {lane}: no status file"));
            continue;
        };
        if status["phase"] != "ready" {
            audit
                .problems
                .push(format!("lane {lane} not ready: {status}"));
        }
        let id = status["container_id"].as_str().unwrap_or("");
        match by_id.get(id) {
            None => {
                audit.stale_status += 1;
                audit.problems.push(format!(
                    "lane {lane}: status names a missing container {id}"
                ));
            }
            Some(c) => {
                if status["spec_hash"].as_str() != Some(label(c, "io.lanectl.spec-hash")) {
                    audit.stale_status += 1;
                    audit.problems.push(format!(
                        "lane {lane}: status spec_hash {} but the container says {}",
                        status["spec_hash"],
                        label(c, "io.lanectl.spec-hash")
                    ));
                }
                if !env_has(c, &format!("LANE_V={v}")) {
                    audit
                        .problems
                        .push(format!("lane {lane}: container not on LANE_V={v}"));
                }
            }
        }
        let report = status["endpoint"]
            .as_str()
            .and_then(|e| try_get(e, "/"))
            .and_then(|body| serde_json::from_str::<Value>(&body).ok());
        let Some(report) = report else {
            audit
                .problems
                .push(format!("lane {lane}: the worker does not answer"));
            continue;
        };
        let inside = reported_codex(&report);
        if inside != codex_hashes(lane, version) {
            audit.half_made += 1;
            audit.problems.push(format!(
                "lane {lane}: codex inside {inside:?}, on the host version {version}"
            ));
        }
    }
}

/// The phases of a lane's change that the kills must spread over.
const PHASES: [&str; 5] = ["create", "copy", "start", "probe", "status write"];

/// Where the lanes of a killed `apply -v` were, from its log: each lane
/// that had work is in the phase after its last step logged (decided:
/// create; created: copy; copied the codex in: start; inspected or acted:
/// probe). "status write" is a kill that came while the pass was writing
/// final statuses: some lane with work had written its final status, another
/// not yet.
fn phases_at_kill(log: &str) -> BTreeSet<&'static str> {
    // Per lane: (phase, is a create or recreate, status writes since acting).
    let mut lanes: BTreeMap<&str, (Option<&'static str>, bool, u32)> = BTreeMap::new();
    let mut done = false;
    for line in log.lines() {
        let Some(lane) = line
            .split("reconcile{lane=")
            .nth(1)
            .and_then(|rest| rest.split(['}', ' ']).next())
        else {
            continue;
        };
        let entry = lanes.entry(lane).or_insert((None, false, 0));
        if let Some(action) = line.split("decided action=").nth(1) {
            let creates = action.starts_with("create") || action.starts_with("recreate");
            *entry = match () {
                () if creates => (Some("create"), true, 0),
                () if action.starts_with("start") => (Some("start"), false, 0),
                () => (None, false, 0),
            };
            continue;
        }
        let Some(phase) = entry.0 else { continue };
        entry.0 = if line.contains("lanectl::exec: created") {
            Some("copy")
        } else if line.contains("copied the codex in") {
            Some("start")
        } else if line.contains("inspected") || line.contains("acted action=") {
            entry.2 = 0;
            Some("probe")
        } else if line.contains("status written") && phase == "probe" {
            // A create writes `pending` (probing) first, then its final status.
            entry.2 += 1;
            if entry.2 > u32::from(entry.1) {
                done = true;
                None
            } else {
                Some("probe")
            }
        } else {
            Some(phase)
        };
    }
    let mut phases: BTreeSet<&'static str> = lanes.values().filter_map(|l| l.0).collect();
    if done && !phases.is_empty() {
        phases.insert("status write");
    }
    phases
}

/// Five worker lanes with codex dirs; each iteration changes something
/// (env, codex bytes, containers removed or stopped, a manifest deleted or
/// restored), starts `apply`, SIGKILLs it after a seeded delay of 0-1200 ms,
/// and checks that every running container has its codex. After kills among
/// creates, and at the end, a normal apply must converge the whole dir.
#[test]
fn kill_minus_9_during_apply_never_leaves_a_duplicate_a_half_started_lane_or_a_lying_status() {
    const KILL_POINTS: usize = 24;
    const MAX_ITERATIONS: u64 = 60;
    let lanes = Lanes::new("kill9");
    let mut present: BTreeSet<&str> = WORKERS.into_iter().collect();
    let (mut v, mut version) = (0u64, 0u64);
    let write_all = |present: &BTreeSet<&str>, v: u64, version: u64| {
        for lane in WORKERS {
            for (path, text) in codex_of(lane, version) {
                lanes.file(&format!("codex/{lane}/{path}"), &text);
            }
            let manifest = lanes.dir().join(format!("{lane}.yaml"));
            if present.contains(lane) {
                let manifest = lanes.worker_lane(&format!(
                    "env: {{LANE_V: '{v}'}}\n\
                     codex: {{source: ../codex/{lane}, target: /root/.codex}}\n"
                ));
                // w0 and w1 answer 0.4 s after their start, so that kills
                // land in the probe too (the others answer within ms).
                let manifest = if lane < "w2" {
                    manifest.replace(
                        "entrypoint: [/usr/local/bin/lane-worker]\ncommand: [serve]",
                        "entrypoint: [/bin/sh, -c]\n\
                         command: ['sleep 0.4; exec /usr/local/bin/lane-worker serve']",
                    )
                } else {
                    manifest
                };
                lanes.write(lane, &manifest);
            } else if manifest.exists() {
                std::fs::remove_file(manifest).expect("remove manifest");
            }
        }
    };
    write_all(&present, v, version);
    lanes.apply_ok();

    let started = Instant::now();
    let mut audit = Audit::default();
    let (mut landed, mut finished, mut audits) = (0usize, 0usize, 0usize);
    let mut delays = Vec::new();
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    // Phase -> how many kills caught a lane in it.
    let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
    let mut i = 0u64;
    // At least KILL_POINTS kills, and on until every phase has been hit
    // (which phases the random delays catch depends on how fast this host's
    // Podman starts containers).
    let all_hit = |spread: &BTreeMap<&str, usize>| PHASES.iter().all(|p| spread.contains_key(p));
    while (landed < KILL_POINTS || !all_hit(&spread)) && i < MAX_ITERATIONS {
        // Change something, so that the killed apply has work of each kind.
        let ids = lanes.containers();
        let kind = i % 4;
        match kind {
            0 => v += 1, // every lane recreated
            1 => {
                v += 1; // created from nothing
                if !ids.is_empty() {
                    let mut args = vec!["rm", "--force", "--time", "0"];
                    args.extend(ids.iter().map(String::as_str));
                    let _ = podman_output(&args);
                }
            }
            2 => {
                // Same spec, containers stopped: started and probed again.
                if !ids.is_empty() {
                    let mut args = vec!["stop", "--time", "0"];
                    args.extend(ids.iter().map(String::as_str));
                    let _ = podman_output(&args);
                }
            }
            _ => {
                // New codex bytes, and w4 removed or brought back.
                v += 1;
                version += 1;
                if !present.remove("w4") {
                    present.insert("w4");
                }
            }
        }
        write_all(&present, v, version);

        let delay = Lcg::new(i).below(1201);
        delays.push(delay);
        // Its debug log says how far each lane got when the kill came.
        let log_path = lanes.path(&format!("apply-{i}.log"));
        let log_file = std::fs::File::create(&log_path).expect("apply log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(lanes.dir())
            .args(["--instance", &lanes.instance, "-v", "apply"])
            .env("CONTAINER_HOST", host())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start lanectl apply");
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("try_wait").is_some() {
            finished += 1;
        } else {
            // Child::kill is SIGKILL.
            child.kill().expect("kill -9 lanectl");
            landed += 1;
            audit.last_kill = format!(
                "kill {i} after {delay} ms at {}",
                humantime::format_rfc3339_nanos(std::time::SystemTime::now())
            );
            child.wait().expect("reap lanectl");
            let log = std::fs::read_to_string(&log_path).expect("apply log");
            for phase in phases_at_kill(&log) {
                *spread.entry(phase).or_default() += 1;
            }
        }
        child.wait().expect("reap lanectl");
        if kind == 1 {
            // After a kill among creates, the next apply starts at once, as a
            // supervisor's restart or a retrying hook would, while Podman may
            // still be carrying out a request of the killed one.
            audit_after_apply(&lanes, &present, v, version, &mut audit);
            audits += 1;
            i += 1;
            continue;
        }
        // Let a request that was already sent to Podman settle.
        std::thread::sleep(Duration::from_millis(100));

        // What the kill left: no running container may lack its codex.
        let containers = inspect_instance(&lanes);
        for lane in &present {
            if !containers
                .iter()
                .any(|c| label(c, "io.lanectl.lane") == *lane)
            {
                *left.entry("no container".into()).or_default() += 1;
            }
        }
        for c in &containers {
            let lane = label(c, "io.lanectl.lane");
            let state = c["State"]["Status"].as_str().unwrap_or("?");
            let spec = if env_has(c, &format!("LANE_V={v}")) {
                "new"
            } else {
                "old"
            };
            *left.entry(format!("{state} ({spec} spec)")).or_default() += 1;
            if c["State"]["Running"] != true {
                continue;
            }
            let port = c["NetworkSettings"]["Ports"]["31417/tcp"][0]["HostPort"]
                .as_str()
                .unwrap_or("");
            let base = format!("http://127.0.0.1:{port}");
            let report = wait_for(Duration::from_secs(3), || {
                serde_json::from_str::<Value>(&try_get(&base, "/")?).ok()
            });
            let Some(report) = report else {
                audit.problems.push(format!(
                    "kill {i}: running {lane} does not answer on {base}"
                ));
                continue;
            };
            let inside = reported_codex(&report);
            if !(0..=version).any(|ver| codex_hashes(lane, ver) == inside) {
                audit.half_made += 1;
                audit.problems.push(format!(
                    "kill {i} after {delay} ms: {lane} runs with codex {inside:?}"
                ));
            }
        }
        let temp = stray_files(&lanes.dir()).len();
        if temp > 0 {
            *left.entry("temporary files".into()).or_default() += temp;
        }

        i += 1;
    }
    audit_after_apply(&lanes, &present, v, version, &mut audit);
    audits += 1;

    delays.sort_unstable();
    println!(
        "kill -9 at {landed} points ({finished} applies finished before their kill; \
         {audits} audited applies; {:.1} s): {} duplicates, {} half-made, {} stale status, \
         {} stray files",
        started.elapsed().as_secs_f64(),
        audit.duplicates,
        audit.half_made,
        audit.stale_status,
        audit.stray,
    );
    println!("kill delays (ms): {delays:?}");
    println!(
        "what the kills left, summed over the {} iterations not audited at once: {left:?}",
        delays.len() - audits + 1
    );
    println!("lanes caught in each phase by the kills: {spread:?}");
    assert!(
        landed >= KILL_POINTS,
        "only {landed} kills landed in a running apply in {MAX_ITERATIONS} iterations"
    );
    let missed: Vec<&str> = PHASES
        .into_iter()
        .filter(|p| !spread.contains_key(p))
        .collect();
    assert!(
        missed.is_empty(),
        "no kill landed in {missed:?}; spread: {spread:?}; delays: {delays:?}"
    );
    assert!(
        audit.problems.is_empty(),
        "{} problems:\n{}",
        audit.problems.len(),
        audit.problems.join("\n")
    );
}

/// `podman inspect` on the test's own service; `None` when it fails.
fn own_inspect(own: &OwnPodman, id: &str) -> Option<Value> {
    let out = Command::new("podman")
        .args(["--remote", "--url", &own.url(), "container", "inspect", id])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0].clone())
}

/// Every lane truly ready, on its wanted `LANE_V`: their container IDs.
fn all_ready(lanes: &Lanes, own: &OwnPodman, want: &BTreeMap<&str, u64>) -> Option<Vec<String>> {
    want.iter()
        .map(|(lane, v)| truly_ready(lanes, own, lane, *v))
        .collect()
}

/// A lane is ready for real: its status says so, the container it names runs
/// on the own service with `LANE_V=<v>`, and the endpoint answers.
fn truly_ready(lanes: &Lanes, own: &OwnPodman, lane: &str, v: u64) -> Option<String> {
    let status = lanes.status(lane)?;
    if status["phase"] != "ready" {
        return None;
    }
    let id = status["container_id"].as_str()?.to_string();
    let c = own_inspect(own, &id)?;
    if c["State"]["Running"] != true || !env_has(&c, &format!("LANE_V={v}")) {
        return None;
    }
    try_get(status["endpoint"].as_str()?, "/healthz")?;
    Some(id)
}

#[test]
fn podman_killed_and_restarted_repeatedly_under_the_daemon() {
    const RECOVERY: Duration = Duration::from_secs(30);
    let lanes = Lanes::new("podman-kills");
    let mut own = OwnPodman::new(&lanes);
    own.load_test_image(&lanes);
    let manifest = |v: u64| lanes.worker_lane(&format!("env: {{LANE_V: '{v}'}}\n"));
    let mut want: BTreeMap<&str, u64> = [("a", 0), ("b", 0), ("c", 0)].into_iter().collect();
    for lane in want.keys() {
        lanes.write(lane, &manifest(0));
    }
    let mut daemon = Daemon::start_with(&lanes, &own.url(), &[]);
    let mut ids = wait_for(Duration::from_secs(60), || all_ready(&lanes, &own, &want))
        .unwrap_or_else(|| panic!("lanes not ready at start\n{}", daemon.log()));

    let mut figures = Vec::new();
    for round in 0..3 {
        // Round 1: how many edits it took until Podman died mid-recreate.
        let mut attempts = 0;
        match round {
            1 => {
                // An edit, and Podman dies while its recreate is under way:
                // the recreate must fail for it ("acted … ok=false"). When
                // it finished first, Podman comes back and a new edit tries
                // again (bounded).
                loop {
                    attempts += 1;
                    want.insert("a", attempts);
                    let from = daemon.log().len();
                    lanes.write("a", &manifest(attempts));
                    let line_of_a = |words: &str| {
                        daemon
                            .log_since(from)
                            .lines()
                            .find(|l| l.contains("lane=a") && l.contains(words))
                            .map(str::to_string)
                    };
                    wait_for(Duration::from_secs(10), || {
                        line_of_a("decided action=recreate")
                    })
                    .unwrap_or_else(|| {
                        panic!("attempt {attempts}: no recreate of a\n{}", daemon.log())
                    });
                    own.kill();
                    let acted = wait_for(Duration::from_secs(10), || {
                        line_of_a("acted action=recreate")
                    });
                    if acted.as_deref().is_some_and(|l| l.contains("ok=false")) {
                        break;
                    }
                    assert!(
                        attempts < 5,
                        "Podman never died mid-recreate in {attempts} attempts\n{}",
                        daemon.log()
                    );
                    own.start();
                    wait_for(RECOVERY, || all_ready(&lanes, &own, &want)).unwrap_or_else(|| {
                        panic!("attempt {attempts}: not ready again\n{}", daemon.log())
                    });
                }
            }
            2 => {
                // An edit made while Podman is away.
                own.kill();
                want.insert("b", 1);
                lanes.write("b", &manifest(1));
            }
            _ => own.kill(),
        }
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            daemon.is_running(),
            "round {round}: the daemon died with Podman\n{}",
            daemon.log()
        );
        own.start();
        let back = Instant::now();
        if round == 0 {
            // Podman is back: a container removed now must come back too
            // (the daemon listens to the new service, not the dead one).
            own.remote(&["rm", "--force", "--time", "0", &ids[2]]);
        }
        let now = wait_for(RECOVERY, || all_ready(&lanes, &own, &want)).unwrap_or_else(|| {
            panic!(
                "round {round}: not ready {RECOVERY:?} after Podman came back: {:?}\n{}",
                want.keys().map(|l| lanes.status(l)).collect::<Vec<_>>(),
                daemon.log()
            )
        });
        let took = back.elapsed().as_secs_f64();
        assert!(daemon.is_running(), "round {round}\n{}", daemon.log());
        figures.push(format!(
            "round {round}{}: ready {took:.1} s after Podman's return",
            match round {
                0 => " (idle; a container removed after the restart)".to_string(),
                1 => format!(" (killed mid-recreate, at attempt {attempts})"),
                _ => " (edit made during the outage)".to_string(),
            }
        ));
        ids = now;
    }
    let containers = own.containers_of(&lanes.instance);
    let lanes_of: Vec<String> = containers
        .iter()
        .filter_map(|id| own_inspect(&own, id))
        .map(|c| label(&c, "io.lanectl.lane").to_string())
        .collect();
    for f in &figures {
        println!("podman killed and restarted: {f}");
    }
    println!("containers at the end: {lanes_of:?}");
    let log = daemon.log();
    assert_eq!(
        containers.len(),
        3,
        "one container per lane: {lanes_of:?}\n{log}"
    );
    let unique: BTreeSet<&String> = lanes_of.iter().collect();
    assert_eq!(
        unique.len(),
        3,
        "one container per lane: {lanes_of:?}\n{log}"
    );
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks every field that a whole status file of `lane` has: the keys are
/// known, each value has its form (`since` a timestamp, ids and hashes full
/// length, `restarts` a number, `message` a string), and a lane that is
/// `ready` names its container, spec hash and endpoint. `since` is written
/// last, so a file cut anywhere fails here.
fn whole_status(lane: &str, text: &str) -> Result<(), String> {
    const KEYS: [&str; 16] = [
        "lane",
        "phase",
        "endpoint",
        "endpoints",
        "container",
        "container_id",
        "spec_hash",
        "codex_fingerprint",
        "manifest_sha256",
        "inputs_sha256",
        "desired_hash",
        "git_commit",
        "history",
        "restarts",
        "message",
        "since",
    ];
    let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("does not parse: {e}"))?;
    let map = v.as_object().ok_or("not a map")?;
    if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key {key}"));
    }
    let str_of = |key: &str| map.get(key).and_then(Value::as_str);
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(str_of("lane") == Some(lane), "lane")?;
    let phase = str_of("phase").unwrap_or("");
    check(
        [
            "pending", "ready", "degraded", "stopped", "failed", "invalid",
        ]
        .contains(&phase),
        "phase",
    )?;
    check(
        str_of("since").is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
        "since",
    )?;
    check(map.get("restarts").is_some_and(Value::is_u64), "restarts")?;
    check(map.get("message").is_some_and(Value::is_string), "message")?;
    let endpoint_ok = |e: &str| {
        e.strip_prefix("http://127.0.0.1:")
            .is_some_and(|port| port.parse::<u16>().is_ok())
    };
    let optional = [
        ("endpoint", &endpoint_ok as &dyn Fn(&str) -> bool),
        ("container", &|c: &str| !c.is_empty()),
        ("container_id", &|c: &str| is_hex(c, 64)),
        ("spec_hash", &|h: &str| {
            h.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64))
        }),
        ("codex_fingerprint", &|h: &str| is_hex(h, 64)),
        ("manifest_sha256", &|h: &str| is_hex(h, 64)),
        ("inputs_sha256", &|h: &str| is_hex(h, 64)),
        ("desired_hash", &|h: &str| {
            h.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64))
        }),
    ];
    for (key, ok) in optional {
        if let Some(value) = map.get(key) {
            check(value.as_str().is_some_and(ok), key)?;
        }
    }
    if let Some(endpoints) = map.get("endpoints") {
        let all = endpoints.as_object().is_some_and(|m| {
            !m.is_empty() && m.values().all(|e| e.as_str().is_some_and(endpoint_ok))
        });
        check(all, "endpoints")?;
    }
    if phase == "ready" {
        for key in ["container_id", "spec_hash", "endpoint", "container"] {
            check(map.contains_key(key), &format!("ready without {key}"))?;
        }
    }
    Ok(())
}

#[test]
fn the_churn_reader_rejects_a_status_file_cut_anywhere() {
    let whole = "lane: a\nphase: ready\nendpoint: http://127.0.0.1:41711\nendpoints:\n  \
                 31417/tcp: http://127.0.0.1:41711\ncontainer: it-a\ncontainer_id: \
                 c446f8b95e59ac272081cf94d8a9a763f82d9625c9da5987c43b0b81d0f0a17d\nspec_hash: \
                 sha256:2f81f3f1ea629be442f28bb5eea258f710eaae181371a450d66c4f0ec38948db\n\
                 codex_fingerprint: d09f7a1a2d255a63b3d7fccfd0ddf96da8211b9b22beba7293b03d506a6d43a7\n\
                 manifest_sha256: 521df22f357f7cd087b039a1f65c91f12748ad2f9d16495ec15a0525e8012790\n\
                 restarts: 0\nmessage: \"\"\nsince: \"2026-12-01T08:36:52Z\"\n";
    assert_eq!(whole_status("a", whole), Ok(()));
    // Every cut but the one of the final newline.
    for cut in 0..whole.len() - 1 {
        assert!(
            whole_status("a", &whole[..cut]).is_err(),
            "cut at {cut} passes:\n{}",
            &whole[..cut]
        );
    }
    assert!(whole_status("b", whole).is_err(), "another lane's file");
}

#[test]
fn status_files_stay_whole_under_churn() {
    const CHURN: Duration = Duration::from_secs(10);
    let lanes = Lanes::new("churn");
    let daemon = Daemon::start(&lanes, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let bad: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let reader = {
        let (stop, reads, gone, bad, dir) = (
            stop.clone(),
            reads.clone(),
            gone.clone(),
            bad.clone(),
            lanes.dir(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&dir)
                    .expect("read the lanes dir")
                    .flatten()
                {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Some(lane) = name.strip_suffix(".status.yaml") else {
                        continue;
                    };
                    let text = match std::fs::read_to_string(entry.path()) {
                        Ok(text) => text,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            gone.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => panic!("read {name}: {e}"),
                    };
                    if let Err(why) = whole_status(lane, &text) {
                        *bad.lock().expect("lock") = Some(format!("{name}: {why}\n{text}"));
                        return;
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };

    let names: Vec<String> = (0..6).map(|n| format!("c{n}")).collect();
    let mut present: BTreeMap<String, u64> = BTreeMap::new();
    let (mut creates, mut edits, mut deletes) = (0, 0, 0);
    let mut rng = Lcg::new(4);
    let started = Instant::now();
    let mut step = 0u64;
    while started.elapsed() < CHURN {
        let lane = &names[rng.below(names.len() as u64) as usize];
        match present.get(lane).copied() {
            None => {
                lanes.write(lane, &lanes.worker_lane("env: {LANE_V: '0'}\n"));
                present.insert(lane.clone(), 0);
                creates += 1;
            }
            Some(v) if rng.below(3) > 0 => {
                let v = v + 1;
                lanes.write(
                    lane,
                    &lanes.worker_lane(&format!("env: {{LANE_V: '{v}'}}\n")),
                );
                present.insert(lane.clone(), v);
                edits += 1;
            }
            Some(_) => {
                std::fs::remove_file(lanes.dir().join(format!("{lane}.yaml")))
                    .expect("remove manifest");
                present.remove(lane);
                deletes += 1;
            }
        }
        step += 1;
        std::thread::sleep(Duration::from_millis(150 + rng.below(200)));
    }
    // The churn stops; the daemon settles on what the files say.
    let settled = wait_for(Duration::from_secs(60), || {
        let containers = inspect_instance(&lanes);
        let ok = names.iter().all(|lane| match present.get(lane) {
            Some(v) => lanes.status(lane).is_some_and(|s| {
                s["phase"] == "ready"
                    && containers
                        .iter()
                        .any(|c| c["Id"] == s["container_id"] && env_has(c, &format!("LANE_V={v}")))
            }),
            None => lanes.status(lane).is_none(),
        });
        (ok && containers.len() == present.len()).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader thread");
    let reads = reads.load(Ordering::Relaxed);
    println!(
        "status churn: {step} edits in {:.1} s ({creates} creates, {edits} recreates, \
         {deletes} deletes); {reads} whole reads, {} reads found the file gone, 0 partial",
        CHURN.as_secs_f64(),
        gone.load(Ordering::Relaxed)
    );
    if let Some(bad) = bad.lock().expect("lock").take() {
        panic!("a reader saw a partial or unparsable status file: {bad}");
    }
    assert!(
        settled.is_some(),
        "not settled on {present:?}: {:?}\n{}",
        names.iter().map(|l| lanes.status(l)).collect::<Vec<_>>(),
        daemon.log()
    );
    assert!(reads >= 1000, "only {reads} reads");
    assert!(
        creates > 0 && edits > 0 && deletes > 0,
        "every kind of churn"
    );
}

fn running(id: &str) -> bool {
    let out = podman_output(&["container", "inspect", "--format", "{{.State.Running}}", id]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
}

#[test]
fn the_lanes_dir_removed_or_emptied_under_the_daemon_prunes_nothing() {
    const HOLD: Duration = Duration::from_secs(3);
    let lanes = Lanes::new("dir-gone");
    let manifest = |v: u64| lanes.worker_lane(&format!("env: {{LANE_V: '{v}'}}\n"));
    lanes.write("a", &manifest(0));
    lanes.write("b", &manifest(0));
    // The warnings come from whichever notices first, the watcher or the
    // resync: a short resync makes sure one does within the hold.
    let mut daemon = Daemon::start(&lanes, &["--resync", "2s"]);
    let ready = |lane: &str, v: u64| {
        let s = lanes.status(lane)?;
        let id = s["container_id"].as_str()?.to_string();
        let c = try_inspect(&id)?; // polled: the container may be being replaced
        (s["phase"] == "ready" && env_has(&c, &format!("LANE_V={v}"))).then_some(id)
    };
    let wait_both = |va: u64, vb: u64, daemon: &Daemon, what: &str| {
        wait_for(Duration::from_secs(30), || {
            Some((ready("a", va)?, ready("b", vb)?))
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: lanes not ready: {:?} {:?}\n{}",
                lanes.status("a"),
                lanes.status("b"),
                daemon.log()
            )
        })
    };
    let (a, b) = wait_both(0, 0, &daemon, "start");
    let dir = lanes.dir();
    let away = lanes.path("lanes.d.away");
    let mut figures = Vec::new();
    // Holds a fault for HOLD: both containers must keep running, the daemon
    // must keep going, and it must say why it does nothing: a WARN line with
    // every one of `says`.
    let mut hold = |what: &str, says: &[&str], ids: [&str; 2], daemon: &mut Daemon| {
        let before = daemon.log().len();
        std::thread::sleep(HOLD);
        let kept = ids.into_iter().filter(|id| running(id)).count();
        let log = daemon.log();
        let warned: Vec<&str> = log
            .get(before..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("WARN") && says.iter().all(|w| l.contains(w)))
            .collect();
        figures.push(format!(
            "{what} for {HOLD:?}: {kept}/2 containers kept running, {} warnings saying \
             {says:?}, first: {}",
            warned.len(),
            warned.first().map_or("none", |l| l.trim())
        ));
        assert_eq!(kept, 2, "{what}: a container was pruned\n{log}");
        assert!(daemon.is_running(), "{what}: the daemon died\n{log}");
        assert!(
            !warned.is_empty(),
            "{what}: no warning saying {says:?}\n{log}"
        );
    };

    let dir_text = dir.display().to_string();
    // (a) The directory renamed away, then a plain file in its place.
    std::fs::rename(&dir, &away).expect("rename the lanes dir away");
    hold(
        "lanes dir renamed away",
        &[
            "cannot read the lanes directory; nothing is pruned",
            &dir_text,
            "No such file or directory",
        ],
        [&a, &b],
        &mut daemon,
    );
    assert!(!dir.exists(), "lanectl recreated the lanes dir");
    std::fs::write(&dir, "not a directory\n").expect("a file in its place");
    hold(
        "lanes dir replaced by a file",
        &[
            "cannot read the lanes directory; nothing is pruned",
            &format!("{dir_text} is not a directory"),
        ],
        [&a, &b],
        &mut daemon,
    );
    std::fs::remove_file(&dir).expect("remove the file");
    std::fs::rename(&away, &dir).expect("rename the lanes dir back");
    // Back, and followed again: an edit recreates its lane.
    lanes.write("a", &manifest(1));
    let (a1, b1) = wait_both(1, 0, &daemon, "dir back, a edited");
    assert_ne!(a1, a, "a recreated after its edit");
    assert_eq!(b1, b, "b untouched");

    // (b) Every manifest gone at once (a bad checkout), no --allow-prune-all.
    let (a, b) = (a1, b1);
    std::fs::remove_file(dir.join("a.yaml")).expect("rm a.yaml");
    std::fs::remove_file(dir.join("b.yaml")).expect("rm b.yaml");
    hold(
        "all manifests deleted",
        &["a bad checkout must not wipe a host", "--allow-prune-all"],
        [&a, &b],
        &mut daemon,
    );
    assert_eq!(lanes.containers().len(), 2);
    lanes.write("a", &manifest(1));
    lanes.write("b", &manifest(0));
    let (a2, b2) = wait_both(1, 0, &daemon, "manifests restored");
    assert_eq!((a2, b2), (a, b), "the same containers, untouched");
    for f in &figures {
        println!("lanes dir fault: {f}");
    }
}

#[test]
fn a_podman_outage_is_not_a_lane_outage_while_the_lane_answers() {
    const OUTAGE: Duration = Duration::from_secs(30);
    let lanes = Lanes::new("outage-ready");
    let mut own = OwnPodman::new(&lanes);
    own.load_test_image(&lanes);
    lanes.write("a", &lanes.worker_lane("env: {LANE_V: '0'}\n"));
    let mut daemon = Daemon::start_with(&lanes, &own.url(), &["--resync", "1s"]);
    let want: BTreeMap<&str, u64> = [("a", 0)].into_iter().collect();
    wait_for(Duration::from_secs(60), || {
        let s = lanes.status("a")?;
        (s["phase"] == "ready").then_some(())
    })
    .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    let endpoint = lanes.status("a").unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .to_string();

    own.kill();
    // What a load balancer reading the status file sees during the outage.
    let (mut phases, mut said_unreachable) = (BTreeMap::new(), false);
    let until = Instant::now() + OUTAGE;
    while Instant::now() < until {
        if let Some(s) = lanes.status("a") {
            let phase = s["phase"].as_str().unwrap_or("?").to_string();
            *phases.entry(phase).or_insert(0) += 1;
            said_unreachable |= s["message"]
                .as_str()
                .is_some_and(|m| m.contains("podman unreachable since"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = crate::common::http_get(&endpoint, "/");
    assert!(
        answers.starts_with('{'),
        "the lane kept answering: {answers:?}"
    );
    assert_eq!(
        phases.keys().collect::<Vec<_>>(),
        ["ready"],
        "phases seen during the outage: {phases:?}\n{}",
        daemon.log()
    );
    assert!(
        said_unreachable,
        "the message never said Podman is unreachable\n{}",
        daemon.log()
    );

    own.start();
    wait_for(Duration::from_secs(60), || {
        let s = lanes.status("a")?;
        let plain = !s["message"].as_str().unwrap_or("").contains("unreachable");
        (plain && all_ready(&lanes, &own, &want).is_some()).then_some(())
    })
    .unwrap_or_else(|| panic!("a not back to plain ready\n{}", daemon.log()));
    assert!(daemon.is_running());
}

#[test]
fn the_daemon_and_a_hook_applying_in_a_loop_lose_nothing() {
    const FOR: Duration = Duration::from_secs(40);
    const LANES: [&str; 3] = ["a", "b", "c"];
    let lanes = Lanes::new("run-and-hook");
    let manifest = |v: usize| lanes.worker_lane(&format!("env: {{LANE_V: '{v}'}}\n"));
    let mut want = [0usize; 3];
    for lane in LANES {
        lanes.write(lane, &manifest(0));
    }
    let daemon = Daemon::start(&lanes, &["--resync", "1s"]);
    let ready_on = |lane: &str, v: usize| {
        let id = lanes.ready_id(lane)?;
        let c = try_inspect(&id)?;
        (c["State"]["Running"] == true && env_has(&c, &format!("LANE_V={v}"))).then_some(id)
    };
    wait_for(Duration::from_secs(60), || {
        LANES.iter().all(|l| ready_on(l, 0).is_some()).then_some(())
    })
    .unwrap_or_else(|| panic!("not ready at start\n{}", daemon.log()));

    // A git hook: edit a lane, then `apply`, again and again, while the
    // daemon sees the same edits.
    let started = Instant::now();
    let (mut applies, mut failures) = (0, Vec::new());
    while started.elapsed() < FOR {
        let i = applies % LANES.len();
        want[i] = applies + 1;
        lanes.write(LANES[i], &manifest(want[i]));
        let run = lanes.lanectl(&["apply"]);
        applies += 1;
        if run.code != 0 {
            failures.push(format!("apply {applies}: {run:?}"));
        }
    }
    // Settled: one container per lane, running the last edit, and ready.
    let settled = wait_for(Duration::from_secs(30), || {
        let ids: Option<Vec<String>> = LANES
            .iter()
            .zip(want)
            .map(|(l, v)| ready_on(l, v))
            .collect();
        let ids = ids?;
        (lanes.containers().len() == LANES.len()).then_some(ids)
    });
    println!(
        "run + {applies} hook applies in {:?}: {} failed; settled: {}",
        started.elapsed(),
        failures.len(),
        settled.is_some()
    );
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        daemon.log()
    );
    assert!(
        settled.is_some(),
        "not one ready container per lane on its last edit: {:?}\n{}",
        lanes.containers(),
        daemon.log()
    );
}
