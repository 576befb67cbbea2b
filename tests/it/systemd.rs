//! systemd integration: the notifications of `run` (a fake NOTIFY_SOCKET),
//! and journal-friendly logs when stderr is the journal.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Lanes, host};

/// Receives datagrams until one contains `what` (or 20 s pass); all of them.
fn until(sock: &UnixDatagram, what: &str, got: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(what);
            got.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no {what} in {got:?}");
}

#[test]
fn run_notifies_systemd_ready_status_watchdog_and_stopping_in_order() {
    let lanes = Lanes::new("sd-notify");
    lanes.write("a", &lanes.worker_lane(""));
    let path = lanes.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(lanes.path("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .arg("--dir")
        .arg(lanes.dir())
        .args(["--instance", &lanes.instance, "run"])
        .env("CONTAINER_HOST", host())
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    until(&sock, "READY=1", &mut got);
    let ready = got.last().unwrap().clone();
    assert!(ready.contains("STATUS=1 lane: 1 ready"), "{got:?}");
    until(&sock, "WATCHDOG=1", &mut got);
    // A change of the summary is said again.
    lanes.write("a", &lanes.failing_probe_lane(""));
    until(&sock, "STATUS=1 lane: 1 failed", &mut got);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    until(&sock, "STOPPING=1", &mut got);
    let at = |what: &str| got.iter().position(|m| m.contains(what)).unwrap();
    assert!(at("READY=1") < at("WATCHDOG=1"), "{got:?}");
    assert!(at("WATCHDOG=1") < at("STOPPING=1"), "{got:?}");
    // That order holds by the test's own steps; what the daemon owes is to
    // keep beating while it works: the failing probe alone takes a second,
    // at a 400 ms watchdog (a ping each half of it).
    let beats = got[..at("STOPPING=1")]
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert!(beats >= 3, "{beats} watchdog pings: {got:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn logs_carry_no_timestamp_or_colour_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let lanes = Lanes::new("journal");
    let path = lanes.path("journal.log");
    // The daemon's first lines (info), with stderr to `path`.
    let run = |journal: bool| {
        let log = std::fs::File::create(&path).unwrap();
        let meta = log.metadata().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanectl"));
        cmd.arg("--dir")
            .arg(lanes.dir())
            .args(["--instance", &lanes.instance, "run"])
            .env("CONTAINER_HOST", host())
            .stdout(Stdio::null())
            .stderr(log);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let mut child = cmd.spawn().unwrap();
        let text = crate::common::wait_for(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&path).ok()?;
            text.contains("converging").then_some(text)
        });
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        text.expect("the daemon logged")
    };
    let plain = run(false);
    assert!(
        plain.starts_with("20"),
        "a timestamp outside the journal: {plain}"
    );
    let journal = run(true);
    assert!(
        journal.lines().all(|l| !l.trim_start().starts_with("20")),
        "no timestamp in the journal: {journal}"
    );
    assert!(journal.contains("INFO"), "{journal}");
    assert!(!journal.contains('\u{1b}'), "no colour: {journal}");
}
