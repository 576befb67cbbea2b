//! The fixtures of the integration tests: a Podman reached through
//! `$CONTAINER_HOST` (scripts/test starts one with its own storage), a
//! temporary lanes directory per test with its own instance id, the lanectl
//! binary, and a Drop guard that removes the test's containers even when the
//! test fails. The podman CLI (in remote mode, against the same service) is
//! the independent witness of what lanectl did.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub const SETUP: &str = "these tests need a Podman service and the worker image: run scripts/test \
     (it starts both), or export CONTAINER_HOST, LANECTL_TEST_IMAGE and LANECTL_TEST_WORKER yourself";

pub fn host() -> String {
    std::env::var("CONTAINER_HOST").expect(SETUP)
}

pub fn image() -> String {
    std::env::var("LANECTL_TEST_IMAGE").expect(SETUP)
}

pub fn worker() -> PathBuf {
    let path = PathBuf::from(std::env::var("LANECTL_TEST_WORKER").expect(SETUP));
    assert!(path.is_file(), "{} is missing: {SETUP}", path.display());
    path
}

/// Runs the podman CLI against the test service; panics on failure.
pub fn podman(args: &[&str]) -> String {
    let out = podman_output(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn podman_output(args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--remote")
        .arg("--url")
        .arg(host())
        .args(args)
        .output()
        .expect("podman CLI not found: run scripts/install-deps")
}

/// Runs the podman CLI against the test service, for `Drop`: never panics
/// (no `CONTAINER_HOST`, no podman CLI, a failed command: `None`). A panic in
/// a `Drop` that runs while its test is already panicking aborts the whole
/// integration binary.
pub fn podman_quietly(args: &[&str]) -> Option<Output> {
    let host = std::env::var("CONTAINER_HOST").ok()?;
    Command::new("podman")
        .args(["--remote", "--url", &host])
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
}

/// `podman inspect` of one container.
pub fn inspect(id: &str) -> Value {
    let v: Value =
        serde_json::from_str(&podman(&["container", "inspect", id])).expect("inspect JSON");
    v[0].clone()
}

/// `podman inspect` of a container that may be gone by now (a status file
/// read a moment ago may name a container being replaced).
pub fn try_inspect(id: &str) -> Option<Value> {
    let out = podman_output(&["container", "inspect", id]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0].clone())
}

/// IDs of the containers carrying an instance label.
pub fn containers_of(instance: &str) -> Vec<String> {
    let filter = format!("label=io.lanectl.instance={instance}");
    let mut ids: Vec<String> = podman(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter])
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A lanes directory owned by one test, with its own instance id.
pub struct Lanes {
    /// Holds `lanes.d/`, `codex/`, `work/` of this test.
    pub root: tempfile::TempDir,
    pub instance: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Lanes {
    pub fn new(test: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let instance = format!("it-{test}-{}-{n}", std::process::id());
        let root = tempfile::Builder::new()
            .prefix("lanectl-it-")
            .tempdir()
            .expect("tempdir");
        for d in ["lanes.d", "codex", "work"] {
            std::fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        Lanes { root, instance }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("lanes.d")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes `lanes.d/<lane>.yaml`. Tests run in parallel on one Podman, so
    /// a worker lane without a `container_name` gets one unique to this test
    /// (appended, so that line numbers stay as written).
    pub fn write(&self, lane: &str, yaml: &str) {
        let yaml =
            if yaml.contains("/usr/local/bin/lane-worker") && !yaml.contains("container_name:") {
                format!("{yaml}\ncontainer_name: {}-{lane}\n", self.instance)
            } else {
                yaml.to_string()
            };
        write_file(&self.dir().join(format!("{lane}.yaml")), &yaml);
    }

    /// Writes a file under the test's root (e.g. `codex/alpha/config.toml`).
    pub fn file(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        write_file(&path, text);
        path
    }

    /// Runs lanectl on this directory and instance.
    pub fn lanectl(&self, args: &[&str]) -> Run {
        self.lanectl_in(&self.dir(), &self.instance, args)
    }

    pub fn lanectl_in(&self, dir: &Path, instance: &str, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(dir)
            .arg("--instance")
            .arg(instance)
            .args(args)
            .env("CONTAINER_HOST", host())
            .output()
            .expect("run lanectl");
        Run::of(out)
    }

    /// Runs lanectl on this directory with no Podman to reach
    /// (`CONTAINER_HOST` unset), for commands that must not need one.
    pub fn lanectl_offline(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(self.dir())
            .arg("--instance")
            .arg(&self.instance)
            .args(args)
            .env_remove("CONTAINER_HOST")
            .output()
            .expect("run lanectl");
        Run::of(out)
    }

    /// Makes a FIFO under the test's root (e.g. `codex/alpha/pipe`).
    pub fn fifo(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        path
    }

    /// `apply`, asserting exit 0.
    pub fn apply_ok(&self) -> Run {
        let run = self.lanectl(&["apply"]);
        assert_eq!(run.code, 0, "apply failed: {run:?}");
        run
    }

    /// A lane's status file as JSON, or `None` when absent.
    pub fn status(&self, lane: &str) -> Option<Value> {
        let path = self.dir().join(format!("{lane}.status.yaml"));
        let text = std::fs::read_to_string(path).ok()?;
        Some(serde_saphyr::from_str(&text).expect("status file parses"))
    }

    pub fn status_mtime(&self, lane: &str) -> std::time::SystemTime {
        std::fs::metadata(self.dir().join(format!("{lane}.status.yaml")))
            .and_then(|m| m.modified())
            .expect("status file exists")
    }

    /// The lane's container id when its status says `ready`.
    pub fn ready_id(&self, lane: &str) -> Option<String> {
        let status = self.status(lane)?;
        (status["phase"] == "ready").then(|| status["container_id"].as_str().map(str::to_string))?
    }

    pub fn container_id(&self, lane: &str) -> String {
        let status = self.status(lane).expect("status file");
        status["container_id"]
            .as_str()
            .expect("container_id")
            .to_string()
    }

    pub fn containers(&self) -> Vec<String> {
        containers_of(&self.instance)
    }

    /// A worker lane: the example worker bind-mounted, its port published and
    /// probed; `extra` is appended (more keys at the top level).
    pub fn worker_lane(&self, extra: &str) -> String {
        format!(
            "image: {image}\n\
             user: root\n\
             entrypoint: [/usr/local/bin/lane-worker]\n\
             command: [serve]\n\
             mounts:\n  - {{source: {worker}, target: /usr/local/bin/lane-worker, read_only: true}}\n\
             ports: [{{container: 31417}}]\n\
             probe: {{path: /healthz, timeout: 10s, interval: 50ms}}\n\
             stop_timeout: 2s\n{extra}",
            image = image(),
            worker = worker().display(),
        )
    }

    /// A worker lane whose probe never passes (the worker answers 404 on
    /// its path) and gives up after 1 s; `extra` as for `worker_lane`.
    pub fn failing_probe_lane(&self, extra: &str) -> String {
        self.failing_probe_lane_after("1s", extra)
    }

    /// [`Self::failing_probe_lane`] giving up after `timeout`.
    pub fn failing_probe_lane_after(&self, timeout: &str, extra: &str) -> String {
        self.worker_lane(extra).replace(
            "path: /healthz, timeout: 10s",
            &format!("path: /nope, timeout: {timeout}"),
        )
    }

    /// GET on a lane's endpoint: the worker's JSON report.
    pub fn worker_report(&self, lane: &str) -> Value {
        let status = self.status(lane).expect("status");
        let endpoint = status["endpoint"].as_str().expect("endpoint").to_string();
        serde_json::from_str(&http_get(&endpoint, "/")).expect("worker JSON")
    }
}

impl Drop for Lanes {
    /// Removes the test's containers. Never panics (see [`podman_quietly`]).
    fn drop(&mut self) {
        let filter = format!("label=io.lanectl.instance={}", self.instance);
        let Some(listed) = podman_quietly(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter])
        else {
            return;
        };
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let ids: Vec<&str> = listed.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--time", "0"];
            args.extend(ids);
            let _ = podman_quietly(&args);
        }
    }
}

fn write_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A host port free on 127.0.0.1 when asked, written down in lanectl's
/// host port ledger so that no lane of a test running beside is handed it
/// before this test binds it.
pub fn free_port() -> u16 {
    let owner = format!("test/{}", std::process::id());
    lanectl::hostports::hand_out(&owner, "127.0.0.1").expect("a free port")
}

/// A minimal HTTP GET returning the body.
pub fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Every `lanectl run` of the tests makes an inotify instance, whose queue
/// size is the kernel's global `max_queued_events` at that moment. The one
/// test that shrinks it takes this lock for writing; each daemon holds it for
/// reading while it lives, so that no other daemon is born with the small
/// queue.
pub static INOTIFY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A read hold on [`INOTIFY`] (a poisoned lock is still a lock).
pub fn inotify_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    INOTIFY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `lanectl run` on a test's lanes directory; killed on drop.
pub struct Daemon {
    child: std::process::Child,
    pub log: PathBuf,
    _inotify: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

impl Daemon {
    pub fn start(lanes: &Lanes, extra: &[&str]) -> Daemon {
        Self::start_with(lanes, &host(), extra)
    }

    pub fn start_with(lanes: &Lanes, url: &str, extra: &[&str]) -> Daemon {
        let guard = inotify_shared();
        let mut daemon = Self::start_unguarded(lanes, url, extra);
        daemon._inotify = Some(guard);
        daemon
    }

    /// For the test that holds [`INOTIFY`] for writing itself.
    pub fn start_unguarded(lanes: &Lanes, url: &str, extra: &[&str]) -> Daemon {
        let log = lanes.path("daemon.log");
        let file = std::fs::File::create(&log).expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(lanes.dir())
            .args(["--instance", &lanes.instance, "--podman", url, "-v", "run"])
            // No resync within any test's time: each change must reach the
            // daemon through the source meant for it (file system, Podman
            // events, back-off retries). A test that needs the resync passes
            // `--resync` itself and says why.
            .args(if extra.contains(&"--resync") {
                &[][..]
            } else {
                &["--resync", "1h"][..]
            })
            .args(extra)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start lanectl run");
        Daemon {
            child,
            log,
            _inotify: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit code (at most `limit`).
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the daemon's inotify instance has a watch on `path` (on the
    /// inode that `path` names now), read from `/proc/<pid>/fdinfo`: the
    /// observable for "the daemon watches this directory", without guessing
    /// how long setting a watch takes.
    pub fn watches(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(ino) = std::fs::metadata(path).map(|m| m.ino()) else {
            return false;
        };
        let needle = format!(" ino:{ino:x} ");
        let proc = PathBuf::from(format!("/proc/{}", self.child.id()));
        let Ok(fds) = std::fs::read_dir(proc.join("fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("anon_inode:inotify"))
                && std::fs::read_to_string(proc.join("fdinfo").join(fd.file_name())).is_ok_and(
                    |info| {
                        info.lines()
                            .any(|l| l.starts_with("inotify ") && l.contains(&needle))
                    },
                )
        })
    }

    /// Waits until [`Daemon::watches`] `path`; panics with the log if not
    /// within `limit`.
    pub fn wait_watching(&self, path: &Path, limit: std::time::Duration) {
        wait_for(limit, || self.watches(path).then_some(())).unwrap_or_else(|| {
            panic!(
                "the daemon does not watch {} after {limit:?}\n{}",
                path.display(),
                self.log()
            )
        });
    }

    /// The log written since `from` (a length of [`Daemon::log`] taken
    /// earlier).
    pub fn log_since(&self, from: usize) -> String {
        self.log().get(from..).unwrap_or_default().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A Podman service of the test's own (vfs storage, no mounts to leak), so
/// that it can be killed and restarted without disturbing other tests.
pub struct OwnPodman {
    root: std::path::PathBuf,
    conf: std::path::PathBuf,
    socket: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnPodman {
    pub fn new(lanes: &Lanes) -> OwnPodman {
        let root = lanes.path("own-podman");
        let conf = lanes.file(
            "own-podman.conf",
            &format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\ntmp_dir = \"{}/tmp\"\n",
                root.display()
            ),
        );
        let socket = root.join("podman.sock");
        let mut own = OwnPodman {
            root,
            conf,
            socket,
            child: None,
        };
        own.start();
        own
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("podman");
        cmd.env_remove("CONTAINER_HOST")
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--storage-driver=vfs")
            .arg("--root")
            .arg(self.root.join("graph"))
            .arg("--runroot")
            .arg(self.root.join("run"));
        cmd
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = self
            .cli()
            .args(["system", "service", "--time=0", &self.url()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a podman service");
        self.child = Some(child);
        wait_for(std::time::Duration::from_secs(10), || {
            let out = std::process::Command::new("podman")
                .args(["--remote", "--url", &self.url(), "version"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        })
        .expect("own podman service answers");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Copies the worker image from the test service into this one's storage.
    pub fn load_test_image(&self, lanes: &Lanes) {
        let tar = lanes.path("image.tar");
        let tar = tar.to_str().expect("utf-8 temp path");
        podman(&["save", "--quiet", "-o", tar, &image()]);
        self.remote(&["load", "--quiet", "-i", tar]);
    }

    /// IDs of this service's containers carrying an instance label.
    pub fn containers_of(&self, instance: &str) -> Vec<String> {
        let filter = format!("label=io.lanectl.instance={instance}");
        let mut ids: Vec<String> = self
            .remote(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect();
        ids.sort();
        ids
    }

    /// Runs the podman CLI against this service; panics on failure.
    pub fn remote(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("podman")
            .args(["--remote", "--url", &self.url()])
            .args(args)
            .output()
            .expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnPodman {
    fn drop(&mut self) {
        let rm = ["rm", "--all", "--force", "--time", "0"];
        if self.child.is_some() {
            let _ = std::process::Command::new("podman")
                .args(["--remote", "--url", &self.url()])
                .args(rm)
                .output();
        } else {
            // Killed by a test that then failed: remove its containers
            // through the storage directly, without a service.
            let _ = self.cli().args(rm).output();
        }
        self.kill();
        // The containers' exit commands (`podman container cleanup`) may
        // still write into the storage for a moment, which would make the
        // temporary dir's removal fail half-way: retry until it is gone.
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.root) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ => break,
            }
        }
    }
}

impl Lanes {
    /// Runs lanectl on this directory with no way to reach any Podman:
    /// `CONTAINER_HOST` unset, `PATH` without a `podman` binary (so no
    /// private service can be started), and `podman` (if given) as `--podman`.
    pub fn lanectl_without_podman(&self, podman: Option<&str>, args: &[&str]) -> Run {
        let empty = self.path("no-podman-bin");
        std::fs::create_dir_all(&empty).expect("mkdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanectl"));
        cmd.arg("--dir")
            .arg(self.dir())
            .arg("--instance")
            .arg(&self.instance);
        if let Some(url) = podman {
            cmd.args(["--podman", url]);
        }
        let out = cmd
            .args(args)
            .env_remove("CONTAINER_HOST")
            .env("PATH", &empty)
            .output()
            .expect("run lanectl");
        Run::of(out)
    }
}

impl Daemon {
    /// Sends a signal (`"INT"`, `"TERM"`) to the daemon, without waiting.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits (at most `limit`) for the daemon to exit: its exit code, or
    /// `None` while it still runs (or when a signal killed it).
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<i32> {
        wait_for(limit, || {
            self.child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| status.code())
        })
        .flatten()
    }
}
