//! Rollouts (SPEC.md "Rollouts"): stable endpoints over recreates, and the
//! start-first order with keep-last-good.

use crate::common::Lanes;

/// The host port of a lane's endpoint.
fn port_of(lanes: &Lanes, lane: &str) -> String {
    let status = lanes.status(lane).expect("a status");
    let endpoint = status["endpoint"].as_str().expect("an endpoint");
    endpoint.rsplit(':').next().unwrap().to_string()
}

#[test]
fn stop_first_recreates_keep_the_lanes_host_port() {
    let lanes = Lanes::new("stable-port");
    lanes.write("a", &lanes.worker_lane("env: {V: '0'}\n"));
    lanes.apply_ok();
    let first = port_of(&lanes, "a");
    let id = lanes.ready_id("a").unwrap();
    let mut kept = 0;
    for v in 1..=5 {
        lanes.write("a", &lanes.worker_lane(&format!("env: {{V: '{v}'}}\n")));
        lanes.apply_ok();
        assert_ne!(lanes.ready_id("a").unwrap(), id, "recreated");
        if port_of(&lanes, "a") == first {
            kept += 1;
        }
    }
    assert_eq!(kept, 5, "every recreate kept host port {first}");
}

/// A plain container (no lanectl labels) of the worker image publishing
/// `port` on 127.0.0.1: the one another lanectl makes for a port it was
/// handed. Removed on drop.
struct Other(String);

impl Other {
    fn create(name: String, port: &str) -> Other {
        let worker = format!(
            "{}:/usr/local/bin/lane-worker:ro",
            crate::common::worker().display()
        );
        crate::common::podman(&[
            "create",
            "--name",
            &name,
            "-p",
            &format!("127.0.0.1:{port}:31417"),
            "-v",
            &worker,
            "--entrypoint",
            "/usr/local/bin/lane-worker",
            &crate::common::image(),
            "serve",
        ]);
        Other(name)
    }

    /// `podman start`: whether it started.
    fn start(&self) -> std::process::Output {
        crate::common::podman_output(&["start", &self.0])
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = crate::common::podman_output(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// After a recreate that had to leave its port to another container: the
/// other one starts on it, and the lane (on its new port) still answers.
/// Podman 4.3 would otherwise fail that start and, cleaning up, take the
/// lane's own forwarding with it.
fn both_serve(lanes: &Lanes, other: &Other, port: &str) {
    let moved = port_of(lanes, "a");
    assert_ne!(
        moved, port,
        "the recreate took back a port another container has"
    );
    let started = other.start();
    assert!(
        started.status.success(),
        "the other container could not start on its port {port}: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert!(
        answers(&lanes.dir().join("a.status.yaml")),
        "the lane answers on {moved}"
    );
}

#[test]
fn a_recreate_leaves_its_old_port_to_another_lanectl_that_was_just_handed_it() {
    let lanes = Lanes::new("port-handed");
    let runtime = tempfile::tempdir().expect("tempdir");
    let apply = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(lanes.dir())
            .args(["--instance", &lanes.instance, "apply"])
            .env("CONTAINER_HOST", crate::common::host())
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .expect("run lanectl");
        let run = crate::common::Run::of(out);
        assert_eq!(run.code, 0, "{run:?}");
    };
    lanes.write("a", &lanes.worker_lane("env: {V: '0'}\n"));
    apply();
    let port = port_of(&lanes, "a");
    // Another lanectl of this user picks the port the moment the lane's
    // old container lets go of it, and writes it down before its start.
    let ledger = lanectl::hostports::Ledger::at(&runtime.path().join("lanectl/host-ports"));
    let (taken, own) = (
        port.parse::<u16>().expect("a port"),
        format!("{}/a", lanes.instance),
    );
    let now = lanectl::hostports::now_ms();
    ledger.update(now, |entries| {
        assert!(
            entries.iter().any(|e| e.port == taken && e.owner == own),
            "the lane's own pick is written down: {entries:?}"
        );
        entries.push(lanectl::hostports::Entry {
            at_ms: now,
            port: taken,
            owner: "another-instance/b".into(),
        });
    });
    lanes.write("a", &lanes.worker_lane("env: {V: '1'}\n"));
    apply();
    // Its container comes only now: Podman could not have told.
    let other = Other::create(format!("{}-other", lanes.instance), &port);
    both_serve(&lanes, &other, &port);
}

/// A start-first worker lane; `extra` as for `worker_lane`.
fn start_first(lanes: &Lanes, extra: &str) -> String {
    lanes.worker_lane(&format!(
        "update: {{order: start-first, drain: 500ms}}\n{extra}"
    ))
}

/// GET `/healthz` at the endpoint the status file names now: whether it
/// answered 200 (within a second).
fn answers(status_path: &std::path::Path) -> bool {
    use std::io::{Read, Write};
    let Ok(text) = std::fs::read_to_string(status_path) else {
        return false;
    };
    let Some(endpoint) = text
        .lines()
        .find_map(|l| l.strip_prefix("endpoint: "))
        .map(|e| e.trim().trim_start_matches("http://").to_string())
    else {
        return false;
    };
    let Ok(addr) = endpoint.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let second = std::time::Duration::from_secs(1);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, second) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(second));
    if write!(stream, "GET /healthz HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")
}

/// The names of the instance's containers.
fn names(lanes: &Lanes) -> Vec<String> {
    let filter = format!("label=io.lanectl.instance={}", lanes.instance);
    let mut names: Vec<String> =
        crate::common::podman(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect();
    names.sort();
    names
}

#[test]
fn a_start_first_rollout_never_drops_a_request() {
    let lanes = Lanes::new("start-first");
    let name = format!("{}-a", lanes.instance);
    lanes.write("a", &start_first(&lanes, "env: {V: '0'}\n"));
    lanes.apply_ok();
    let status = lanes.dir().join("a.status.yaml");
    assert!(answers(&status));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, status) = (stop.clone(), status.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if answers(&status) {
                    ok += 1;
                } else {
                    failed += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            (ok, failed)
        })
    };
    let mut ids = vec![lanes.ready_id("a").unwrap()];
    for v in 1..=3 {
        lanes.write("a", &start_first(&lanes, &format!("env: {{V: '{v}'}}\n")));
        let plan = lanes.lanectl(&["plan"]);
        assert!(
            plan.stdout
                .contains("a  recreate: spec changed (env.V) (start-first)"),
            "{plan:?}"
        );
        let run = lanes.apply_ok();
        assert!(run.stdout.contains("(start-first)"), "{run:?}");
        ids.push(lanes.ready_id("a").unwrap());
        assert_eq!(
            names(&lanes),
            std::slice::from_ref(&name),
            "one container, under the lane's name"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = poller.join().unwrap();
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(ok > 50, "the poller ran: {ok}");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "each edit made a new container: {ids:?}");
}

#[test]
fn a_failing_new_version_keeps_the_old_one_serving() {
    let lanes = Lanes::new("keep-last-good");
    let name = format!("{}-a", lanes.instance);
    lanes.write("a", &start_first(&lanes, ""));
    lanes.apply_ok();
    let good = lanes.status("a").unwrap();
    let status = lanes.dir().join("a.status.yaml");

    // A probe that never passes, then a worker that exits at once.
    // (The probe is not in the hash: the new version listens elsewhere.)
    let failing = start_first(&lanes, "")
        .replace("command: [serve]", "command: [serve, --port, '9999']")
        .replace("timeout: 10s", "timeout: 2s");
    let exiting = start_first(&lanes, "").replace("command: [serve]", "command: [no-such-verb]");
    for (bad, step) in [(failing, "probe"), (exiting, "exit")] {
        lanes.write("a", &bad);
        let run = lanes.lanectl(&["apply"]);
        assert_eq!(run.code, 1, "{run:?}");
        let st = lanes.status("a").unwrap();
        assert_eq!(st["phase"], "degraded", "{st}");
        assert_eq!(st["container_id"], good["container_id"], "{st}");
        assert_eq!(st["endpoint"], good["endpoint"], "{st}");
        assert_eq!(st["spec_hash"], good["spec_hash"], "{st}");
        assert!(
            st["desired_hash"]
                .as_str()
                .is_some_and(|h| h != good["spec_hash"]),
            "{st}"
        );
        let message = st["message"].as_str().unwrap();
        assert!(message.contains(&format!("failed at {step}")), "{message}");
        assert!(answers(&status), "the old container serves on");
        assert_eq!(
            names(&lanes),
            std::slice::from_ref(&name),
            "the failed one is gone"
        );
    }

    // Fixing the manifest rolls forward.
    lanes.write("a", &start_first(&lanes, "env: {FIXED: '1'}\n"));
    lanes.apply_ok();
    let st = lanes.status("a").unwrap();
    assert_eq!(st["phase"], "ready", "{st}");
    assert_ne!(st["container_id"], good["container_id"]);
    assert!(st.get("desired_hash").is_none(), "{st}");
    assert_eq!(names(&lanes), [name]);
}

/// `lanectl apply` on the test's lanes, started (not waited for).
fn spawn_apply(lanes: &Lanes) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .arg("--dir")
        .arg(lanes.dir())
        .args(["--instance", &lanes.instance, "apply"])
        .env("CONTAINER_HOST", crate::common::host())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn lanectl apply")
}

#[test]
fn kill_9_anywhere_in_a_start_first_rollout_is_finished_or_undone_by_the_next_apply() {
    let lanes = Lanes::new("rollout-kill");
    let name = format!("{}-a", lanes.instance);
    lanes.write("a", &start_first(&lanes, "env: {V: '0'}\n"));
    lanes.apply_ok();

    // How long one rollout takes here, to spread the kills over it.
    lanes.write("a", &start_first(&lanes, "env: {V: 'timed'}\n"));
    let clock = std::time::Instant::now();
    lanes.apply_ok();
    let span = clock.elapsed();

    let mut mid_rollout = 0;
    for i in 0..20u32 {
        lanes.write("a", &start_first(&lanes, &format!("env: {{V: '{i}'}}\n")));
        let mut apply = spawn_apply(&lanes);
        std::thread::sleep(span * i / 20);
        let _ = apply.kill();
        let _ = apply.wait();

        // Killed: at most one extra container, and the status names one
        // that exists.
        let seen = names(&lanes);
        assert!(seen.len() <= 2, "kill {i}: {seen:?}");
        if seen.iter().any(|n| n.ends_with(".next")) {
            mid_rollout += 1;
        }
        assert_status_names_a_live_container(&lanes, i);

        // The next apply finishes or undoes it.
        let run = lanes.lanectl(&["apply"]);
        assert_eq!(run.code, 0, "kill {i}: {run:?}");
        assert_eq!(names(&lanes), std::slice::from_ref(&name), "kill {i}");
        let st = lanes.status("a").unwrap();
        assert_eq!(st["phase"], "ready", "kill {i}: {st}");
        let id = st["container_id"].as_str().unwrap();
        let c = crate::common::inspect(id);
        assert_eq!(
            c["Config"]["Labels"]["io.lanectl.spec-hash"], st["spec_hash"],
            "kill {i}"
        );
        assert_eq!(
            c["Config"]["Env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| *e == &serde_json::Value::from(format!("V={i}")))
                .count(),
            1,
            "kill {i}: the newest spec runs"
        );
        assert!(answers(&lanes.dir().join("a.status.yaml")), "kill {i}");
    }
    assert!(
        mid_rollout >= 3,
        "only {mid_rollout} of 20 kills left a new container beside the old one: \
         the kills missed the rollout ({span:?})"
    );
}

#[test]
fn the_daemon_rolls_out_start_first_through_an_edit_mid_rollout_and_backs_off_a_failing_one() {
    let lanes = Lanes::new("rollout-daemon");
    let name = format!("{}-a", lanes.instance);
    lanes.write("a", &start_first(&lanes, "env: {V: '0'}\n"));
    lanes.apply_ok();
    let status = lanes.dir().join("a.status.yaml");
    let mut daemon = crate::common::Daemon::start(&lanes, &[]);
    let limit = std::time::Duration::from_secs(30);
    daemon.wait_watching(&lanes.dir(), limit);
    // V of the ready container.
    let env_of = |lanes: &Lanes| {
        lanes.ready_id("a")?;
        env_of_status(lanes)
    };

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, status) = (stop.clone(), status.clone());
        std::thread::spawn(move || {
            let mut failed = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !answers(&status) {
                    failed += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            failed
        })
    };
    // An edit, and another while the first one rolls out.
    lanes.write("a", &start_first(&lanes, "env: {V: '1'}\n"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    lanes.write("a", &start_first(&lanes, "env: {V: '2'}\n"));
    crate::common::wait_for(limit, || {
        (env_of(&lanes).as_deref() == Some("2") && names(&lanes) == [name.clone()]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{:?} {:?}\n{}",
            lanes.status("a"),
            names(&lanes),
            daemon.log()
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        names(&lanes),
        std::slice::from_ref(&name),
        "nothing left behind"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        poller.join().unwrap(),
        0,
        "requests failed\n{}",
        daemon.log()
    );

    // A new version that exits at once: degraded, retried with back-off
    // (never in a tight loop), the old one serving throughout.
    let from = daemon.log().len();
    lanes.write(
        "a",
        &start_first(&lanes, "").replace("command: [serve]", "command: [no-such-verb]"),
    );
    crate::common::wait_for(limit, || {
        (lanes.status("a")?["phase"] == "degraded").then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", lanes.status("a"), daemon.log()));
    std::thread::sleep(std::time::Duration::from_secs(8));
    let tries = daemon.log()[from..]
        .matches("the new container failed; the old one serves on")
        .count();
    assert!(
        (1..=5).contains(&tries),
        "{tries} tries in about 8 s\n{}",
        daemon.log()
    );
    assert!(answers(&status), "the old one serves on");
    assert_eq!(env_of_status(&lanes), Some("2".to_string()));

    // Fixed: rolled forward at once, not at the end of a back-off.
    let clock = std::time::Instant::now();
    lanes.write("a", &start_first(&lanes, "env: {V: '3'}\n"));
    crate::common::wait_for(limit, || {
        (env_of(&lanes).as_deref() == Some("3") && names(&lanes) == [name.clone()]).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", lanes.status("a"), daemon.log()));
    assert!(
        clock.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        clock.elapsed()
    );
    assert_eq!(names(&lanes), [name]);
    daemon.terminate(std::time::Duration::from_secs(10));
}

/// V of the container the status names (ready or degraded).
fn env_of_status(lanes: &Lanes) -> Option<String> {
    let id = lanes.status("a")?["container_id"].as_str()?.to_string();
    let c = crate::common::try_inspect(&id)?;
    let env = c["Config"]["Env"].as_array()?.clone();
    env.iter()
        .filter_map(|e| e.as_str()?.strip_prefix("V=").map(String::from))
        .next()
}

#[test]
fn kill_9_of_the_daemon_mid_rollout_then_an_edit_ends_with_the_newest_spec_alone() {
    let lanes = Lanes::new("rollout-daemon-kill");
    let name = format!("{}-a", lanes.instance);
    lanes.write("a", &start_first(&lanes, "env: {V: '0'}\n"));
    lanes.apply_ok();
    let limit = std::time::Duration::from_secs(30);
    let mut mid_rollout = 0;
    for i in 0..6u32 {
        // The daemon starts a rollout and is killed somewhere in it...
        lanes.write("a", &start_first(&lanes, &format!("env: {{V: 'a{i}'}}\n")));
        let mut daemon = crate::common::Daemon::start(&lanes, &[]);
        std::thread::sleep(std::time::Duration::from_millis(150 * u64::from(i)));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &daemon.pid().to_string()])
            .status();
        let _ = daemon.wait_exit(std::time::Duration::from_secs(5));
        if names(&lanes).iter().any(|n| n.ends_with(".next")) {
            mid_rollout += 1;
        }
        assert_status_names_a_live_container(&lanes, i);
        // ...the manifest changes meanwhile, and a new daemon converges.
        let newest = format!("b{i}");
        lanes.write(
            "a",
            &start_first(&lanes, &format!("env: {{V: '{newest}'}}\n")),
        );
        let mut daemon = crate::common::Daemon::start(&lanes, &[]);
        daemon.wait_watching(&lanes.dir(), limit);
        crate::common::wait_for(limit, || {
            let ready = lanes.ready_id("a")?;
            (env_of_status(&lanes).as_deref() == Some(newest.as_str())
                && names(&lanes) == [name.clone()]
                && crate::common::try_inspect(&ready).is_some())
            .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "kill {i}: {:?} {:?}\n{}",
                lanes.status("a"),
                names(&lanes),
                daemon.log()
            )
        });
        assert!(answers(&lanes.dir().join("a.status.yaml")), "kill {i}");
        daemon.terminate(std::time::Duration::from_secs(10));
    }
    assert!(
        mid_rollout >= 1,
        "no kill left a new container beside the old one: the kills missed the rollouts"
    );
}

/// After kill `i`: the status, if it names a container, names one that exists.
fn assert_status_names_a_live_container(lanes: &Lanes, i: u32) {
    if let Some(id) = lanes
        .status("a")
        .and_then(|s| s["container_id"].as_str().map(String::from))
    {
        assert!(
            crate::common::try_inspect(&id).is_some(),
            "kill {i}: the status names container {id}, which does not exist"
        );
    }
}
