//! The table, the targets checked against it and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::results::{Key, Results, Stats, Unit};
use crate::{Bench, JOBS, PROBE_INTERVAL};

pub(crate) fn machine(bench: &Bench) -> BTreeMap<&'static str, String> {
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

pub(crate) fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::MiB => format!("{v:.1} MiB"),
        Unit::Count => format!("{v:.0}"),
        Unit::Percent => format!("{v:.2} %"),
    }
}

pub(crate) fn table(res: &Results, lanes: &[usize]) -> String {
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

pub(crate) fn short_peer(key: Key) -> &'static str {
    match key {
        Key::GoCold | Key::GoNoop | Key::GoEdit => "Go",
        _ => "compose",
    }
}

/// One of the targets against this run: (text, measured, met).
pub(crate) struct Target {
    pub(crate) text: String,
    pub(crate) measured: String,
    pub(crate) met: Option<bool>,
}

/// The targets, judged at the N they name when it was measured; else
/// the figure at the nearest N measured is shown, unjudged.
pub(crate) fn targets(res: &Results, lanes: &[usize]) -> Vec<Target> {
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
        "daemon idle with 100 lanes and --metrics (scraped every 5 s): RSS ≤ 15 MB, CPU ≤ 1%",
        idle(Key::DaemonRssMetrics)
            .zip(idle(Key::DaemonCpuMetrics))
            .map(|(rss, cpu)| {
                let mb = rss * 1.048_576;
                (
                    format!("{at}{rss:.1} MiB = {mb:.1} MB, CPU {cpu:.2} %"),
                    mb <= 15.0 && cpu <= 1.0,
                )
            }),
    );
    check(
        "unchanged codex dir of 1 000 files re-fingerprinted ≤ 5 ms; hashing ≥ 500 MB/s",
        None,
    );
    // Rollouts (issue 11), of one lane, measured beside the smallest N.
    let rn = res
        .samples
        .keys()
        .find(|(_, k)| *k == Key::RolloutStartFailed)
        .map(|(n, _)| *n);
    let all = |k: Key| rn.and_then(|n| res.samples.get(&(n, k)));
    let r = |k: Key| rn.and_then(|n| m(n, k));
    check(
        "start-first: 0 failed requests while one lane is recreated (20 edits)",
        all(Key::RolloutStartFailed).map(|v| {
            let failed: f64 = v.iter().sum();
            let gap = r(Key::RolloutStartGap)
                .map_or(String::new(), |g| format!(", longest gap {}", ms(g)));
            (format!("{failed:.0} failed{gap}"), failed == 0.0)
        }),
    );
    check(
        "stop-first: no worse than docker-compose (longest gap while recreated)",
        r(Key::RolloutStopGap)
            .zip(r(Key::RolloutComposeGap))
            .map(|(s, c)| {
                let failed = |k: Key| r(k).map_or("?".into(), |v| format!("{v:.0}"));
                (
                    format!(
                        "{} vs {} (failed requests {} vs {})",
                        ms(s),
                        ms(c),
                        failed(Key::RolloutStopFailed),
                        failed(Key::RolloutComposeFailed)
                    ),
                    s <= c,
                )
            }),
    );
    check(
        "start-first: edit → new version serving ≤ 1.2x one lane's create+copy+start+probe",
        r(Key::RolloutStartServing)
            .zip(rn.and_then(|n| m(n, Key::FloorOneLane)))
            .map(|(v, one)| {
                let done = r(Key::RolloutStartDone)
                    .map_or(String::new(), |d| format!("; old one gone at {}", ms(d)));
                (
                    format!("{} (limit {}){done}", ms(v), ms(1.2 * one)),
                    v <= 1.2 * one,
                )
            }),
    );
    check(
        "stop-first recreates that kept their host port ≥ 95%",
        r(Key::RolloutStablePorts).map(|v| (format!("{v:.0} %"), v >= 95.0)),
    );
    out
}

pub(crate) fn report_json(
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
                "unit": match key.unit() { Unit::Seconds => "s", Unit::MiB => "MiB", Unit::Percent => "%", Unit::Count => "" },
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
