//! `run --metrics`: the scrape parsed with a Prometheus exposition parser,
//! and `/healthz`.

use std::time::Duration;

use crate::common::{Daemon, Lanes, free_port, http_get, wait_for};

/// One sample's value, by metric name and labels.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            prometheus_parse::Value::Histogram(ref h) => h.last().map(|b| b.count),
            _ => None,
        })
}

fn scrape(base: &str) -> (String, prometheus_parse::Scrape) {
    let text = http_get(base, "/metrics");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    (text, parsed)
}

#[test]
fn a_scrape_during_a_run_shows_each_lanes_phase_recreates_and_podman_timings() {
    let lanes = Lanes::new("metrics");
    lanes.write("a", &lanes.worker_lane("env: {TOKEN: sk-METRICS-SECRET}\n"));
    lanes.write("bad", &lanes.failing_probe_lane(""));
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");
    let mut daemon = Daemon::start(&lanes, &["--metrics", &addr]);
    daemon.wait_watching(&lanes.dir(), Duration::from_secs(10));
    wait_for(Duration::from_secs(30), || {
        let a = lanes.status("a")?;
        let bad = lanes.status("bad")?;
        (a["phase"] == "ready" && bad["phase"] == "failed").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", daemon.log()));
    // The daemon counts a lane's pass once it returns, a moment after the
    // pass wrote its status file.
    let (text, s) = wait_for(Duration::from_secs(5), || {
        let (text, s) = scrape(&base);
        let counted = |lane, phase| {
            value(
                &s,
                "lanectl_lane_phase",
                &[("lane", lane), ("phase", phase)],
            )
            .is_some()
        };
        (counted("a", "ready") && counted("bad", "failed")).then_some((text, s))
    })
    .unwrap_or_else(|| scrape(&base));
    let phase = |lane, phase| {
        value(
            &s,
            "lanectl_lane_phase",
            &[("lane", lane), ("phase", phase)],
        )
    };
    assert_eq!(phase("a", "ready"), Some(1.0), "{text}");
    assert_eq!(phase("bad", "failed"), Some(1.0), "{text}");
    assert_eq!(phase("a", "failed"), None, "one phase per lane: {text}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&s, "lanectl_build_info", &[("version", version)]),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &s,
            "lanectl_reconcile_duration_seconds_count",
            &[("result", "ok")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        value(
            &s,
            "lanectl_podman_request_duration_seconds_count",
            &[("operation", "list")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        value(&s, "lanectl_last_full_resync_timestamp_seconds", &[]).is_some_and(|v| v > 1e9),
        "{text}"
    );
    assert!(value(&s, "lanectl_queue_depth", &[]).is_some(), "{text}");
    assert!(
        !text.contains("METRICS-SECRET"),
        "an env value in the scrape"
    );
    assert_eq!(http_get(&base, "/healthz").trim(), "ok");

    // A spec edit is a recreate with its reason.
    lanes.write(
        "a",
        &lanes.worker_lane("env: {TOKEN: sk-METRICS-SECRET-2}\n"),
    );
    wait_for(Duration::from_secs(30), || {
        let (_, s) = scrape(&base);
        value(
            &s,
            "lanectl_recreates_total",
            &[("lane", "a"), ("reason", "spec")],
        )
        .filter(|v| *v >= 1.0)
    })
    .unwrap_or_else(|| panic!("no recreate counted: {}", scrape(&base).0));
    daemon.terminate(Duration::from_secs(10));
}

#[test]
fn healthz_is_503_with_the_reason_while_podman_does_not_answer_and_200_once_it_does() {
    let lanes = Lanes::new("healthz");
    let mut own = crate::common::OwnPodman::new(&lanes);
    own.load_test_image(&lanes);
    lanes.write("a", &lanes.worker_lane(""));
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");
    let mut daemon =
        Daemon::start_with(&lanes, &own.url(), &["--metrics", &addr, "--resync", "1s"]);
    // The daemon may not listen yet: no answer is no health either.
    let health = |base: &str| {
        use std::io::{Read, Write};
        let addr = base.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return String::new();
        };
        let _ = write!(stream, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_string())
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(30), || {
        (health(&base) == "ok").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", daemon.log()));
    own.kill();
    let why = wait_for(Duration::from_secs(30), || {
        let body = health(&base);
        body.contains("podman did not answer").then_some(body)
    })
    .unwrap_or_else(|| panic!("{}", daemon.log()));
    assert!(why.contains("error trying to connect"), "{why}");
    own.start();
    wait_for(Duration::from_secs(60), || {
        (health(&base) == "ok").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", daemon.log()));
    daemon.terminate(Duration::from_secs(10));
}
