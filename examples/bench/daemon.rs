//! lanectl run: start to all ready, a new manifest to ready, `rm -f` to ready, idle RSS and CPU.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use anyhow::{anyhow, bail, ensure};
use podman_api::opts::ContainerDeleteOpts;

use lanectl::status::Phase;

use crate::fleet::Fleet;
use crate::results::{Key, Results, Stats};
use crate::util::{remove_tagged, tag};
use crate::{Bench, JOBS, MEASUREMENT_LIMIT};

/// `lanectl run` on a fleet; SIGKILLed on drop if still running.
pub(crate) struct Daemon {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: i32,
}

impl Daemon {
    pub(crate) fn start(bench: &Bench, fleet: &Fleet) -> Result<Daemon> {
        Self::start_with(bench, fleet, &[])
    }

    /// [`Daemon::start`] with more flags of `run`.
    pub(crate) fn start_with(bench: &Bench, fleet: &Fleet, extra: &[&str]) -> Result<Daemon> {
        let log = std::fs::File::create(fleet.root.path().join("daemon.log"))?;
        let mut command = tokio::process::Command::new(&bench.lanectl);
        command
            .arg("--dir")
            .arg(fleet.dir())
            .args(["--instance", &fleet.tag, "--jobs", &JOBS.to_string(), "run"])
            .args(extra)
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
    pub(crate) async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let waited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        ensure!(
            matches!(waited, Ok(Ok(s)) if s.success()),
            "lanectl run did not exit 0 on SIGTERM: {waited:?}"
        );
        Ok(())
    }

    pub(crate) fn alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("lanectl run exited: {status}"),
        }
    }

    /// (utime + stime in seconds, VmRSS in MiB) from /proc.
    pub(crate) fn usage(&self) -> Result<(f64, f64)> {
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

/// The daemon idle for `idle`: (max RSS MiB, CPU % of a core, median
/// second's CPU %). With `scrape`, `/metrics` on that port is fetched every
/// 5 s meanwhile.
async fn idle_usage(
    daemon: &mut Daemon,
    idle: Duration,
    scrape: Option<u16>,
    res: &mut Results,
    n: usize,
) -> Result<(f64, f64, f64)> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, mut rss) = daemon.usage()?;
    let (start, mut last, mut per_second) = (Instant::now(), cpu0, Vec::new());
    while start.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        daemon.alive()?;
        if let Some(port) = scrape
            && per_second.len() % 5 == 0
        {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            ensure!(
                lanectl::probe::once(addr, "/metrics").await,
                "the metrics endpoint did not answer"
            );
        }
        let (cpu, now_rss) = daemon.usage()?;
        per_second.push((cpu - last) * 100.0);
        (last, rss) = (cpu, rss.max(now_rss));
    }
    let cpu = (last - cpu0) / start.elapsed().as_secs_f64() * 100.0;
    let with = if scrape.is_some() {
        " with --metrics"
    } else {
        ""
    };
    res.notes.push(format!(
        "daemon idle CPU per second with {n} lanes{with} (%): {per_second:?}"
    ));
    // Busy polling shows in every second; a resync only in a few.
    Ok((rss, cpu, Stats::of(&per_second).median))
}

/// Polls until `done` holds, checking that the daemon still runs.
pub(crate) async fn wait_until(
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

pub(crate) async fn measure_daemon(
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
                .all(|l| fleet.status(l).is_some_and(|s| s.phase == Phase::Ready))
        };
        wait_until(&mut daemon, Duration::from_millis(50), all_ready).await?;
        res.add_time(n, Key::DaemonStart, start.elapsed());
        for run in 0..runs {
            // Let the events of the previous step die down.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let lane = format!("new-{run}");
            let start = Instant::now();
            fleet.add_lane(bench, &lane)?;
            let ready = || fleet.status(&lane).is_some_and(|s| s.phase == Phase::Ready);
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
                fleet.status(victim).is_some_and(|s| {
                    s.phase == Phase::Ready && s.container_id.as_ref() != Some(&old)
                })
            };
            wait_until(&mut daemon, Duration::from_millis(5), replaced).await?;
            res.add_time(n, Key::DaemonRemoved, start.elapsed());
        }
        if let Some(idle) = idle {
            // Idle is measured on a daemon started over ready lanes, without
            // and then with --metrics, so that the two compare.
            daemon.stop().await?;
            daemon = Daemon::start(bench, &fleet)?;
            wait_until(&mut daemon, Duration::from_millis(50), all_ready).await?;
            let (rss, cpu, quiet) = idle_usage(&mut daemon, idle, None, res, n).await?;
            res.add(n, Key::DaemonRss, rss);
            res.add(n, Key::DaemonCpu, cpu);
            res.add(n, Key::DaemonCpuQuiet, quiet);
            // The same with --metrics, scraped every 5 s as Prometheus would.
            daemon.stop().await?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = format!("127.0.0.1:{port}");
            daemon = Daemon::start_with(bench, &fleet, &["--metrics", &addr])?;
            wait_until(&mut daemon, Duration::from_millis(50), all_ready).await?;
            let (rss, cpu, _) = idle_usage(&mut daemon, idle, Some(port), res, n).await?;
            res.add(n, Key::DaemonRssMetrics, rss);
            res.add(n, Key::DaemonCpuMetrics, cpu);
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
