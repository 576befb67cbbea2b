//! The connection: the socket URL, the `_ping`, and the private `podman system service`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Podman, PodmanError};

/// How long a `_ping` may take before Podman counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the first `_ping` may take: a socket-activated Podman
/// (`podman.socket`) accepts at once and answers once it has started, which
/// can take longer than a liveness ping allows. A socket nobody listens on
/// is refused at once, whatever this says.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a private service may take to answer its first `_ping`.
const SERVICE_STARTUP: Duration = Duration::from_secs(10);

impl Podman {
    /// Resolves the URL (`explicit` > `$CONTAINER_HOST` > the per-user default) and pings
    /// it. Only when neither an explicit URL nor `$CONTAINER_HOST` was given, nothing
    /// answers, a `podman` binary exists and we do not run as a systemd unit, starts
    /// `podman system service` on a private socket for as long as the value lives.
    pub async fn connect(explicit: Option<&str>) -> Result<Podman, PodmanError> {
        let host = std::env::var("CONTAINER_HOST")
            .ok()
            .filter(|h| !h.is_empty());
        let given = explicit.map(str::to_owned).or(host);
        let url = given.clone().unwrap_or_else(default_url);
        let (api, service) = (client(&url)?, None);
        let Err(reason) = ping_within(&api, CONNECT_TIMEOUT).await else {
            return Ok(Podman {
                api,
                url,
                _service: service,
            });
        };
        if given.is_some() {
            return Err(PodmanError::Unreachable { url, reason });
        }
        if let Some(path) = url.strip_prefix("unix://")
            && std::fs::symlink_metadata(path).is_ok()
        {
            // The system's (or the user's) socket exists: a second Podman
            // beside it would hide its containers. Say what is wrong with it.
            let reason = format!("{reason} (the socket exists: is its Podman service healthy?)");
            return Err(PodmanError::Unreachable { url, reason });
        }
        if std::env::var_os("INVOCATION_ID").is_some() {
            // A service started inside lanectl's unit dies with it on `systemctl stop`,
            // and with it every lane: use the system's podman.socket instead.
            let reason = format!("{reason} (under systemd: enable podman.socket)");
            return Err(PodmanError::Unreachable { url, reason });
        }
        let spawned = PrivateService::spawn().map_err(|e| PodmanError::Unreachable {
            url: url.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{reason}; and no `podman` binary on PATH to start a private service")
            } else {
                format!("{reason}; starting a private podman service: {e}")
            },
        })?;
        let url = format!("unix://{}", spawned.socket.display());
        let api = client(&url)?;
        spawned.wait_ready(&api, &url).await?;
        // Said at the default level of every command: this Podman has its
        // own storage, so the lanes' images and containers of the usual one
        // are not there (a git hook run from a shell without CONTAINER_HOST).
        tracing::warn!(url = %url, reason = %reason, "nothing answered at the default socket: started a private podman service (set CONTAINER_HOST or --podman to use another)");
        let service = Some(spawned);
        Ok(Podman {
            api,
            url,
            _service: service,
        })
    }

    /// Whether Podman answers now.
    pub async fn ping(&self) -> Result<(), PodmanError> {
        ping(&self.api)
            .await
            .map_err(|reason| PodmanError::Unreachable {
                url: self.url.clone(),
                reason,
            })
    }

    /// The URL this connection talks to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `explicit` and `$CONTAINER_HOST` aside: root's system socket, else the user's.
fn default_url() -> String {
    use std::os::unix::fs::MetadataExt;
    // No libc here: /proc/self belongs to the process's effective user.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return "unix:///run/podman/podman.sock".into();
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| format!("/run/user/{uid}"));
    format!("unix://{runtime}/podman/podman.sock")
}

fn client(url: &str) -> Result<podman_api::Podman, PodmanError> {
    podman_api::Podman::new(url).map_err(|e| PodmanError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

async fn ping(api: &podman_api::Podman) -> Result<(), String> {
    ping_within(api, PING_TIMEOUT).await
}

async fn ping_within(api: &podman_api::Podman, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, api.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to _ping within {limit:?}")),
    }
}

/// A `podman system service` child on a socket in a private temporary directory;
/// killed, reaped and removed on drop. Lanes outlive it: their conmon processes
/// are not its children.
pub(super) struct PrivateService {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivateService {
    fn spawn() -> std::io::Result<PrivateService> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("lanectl-podman-")
            .tempdir()?;
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log"))?;
        let mut command = Command::new("podman");
        command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal must not kill Podman
            // under a lanectl that is still finishing a write.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe, which is all that pre_exec
        // asks of the closure. With it the service dies with lanectl however
        // lanectl ends (a signal, a crash), not only through Drop.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(PrivateService { child, socket, dir })
    }

    async fn wait_ready(&self, api: &podman_api::Podman, url: &str) -> Result<(), PodmanError> {
        let deadline = Instant::now() + SERVICE_STARTUP;
        loop {
            let reason = match ping(api).await {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            let log =
                std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or(&reason).to_owned();
            if Instant::now() >= deadline {
                let reason = format!(
                    "private podman service did not answer within {SERVICE_STARTUP:?}: {last}"
                );
                return Err(PodmanError::Unreachable {
                    url: url.to_owned(),
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateService {
    fn drop(&mut self) {
        // SIGKILL, then reap; errors mean it is already gone. TempDir removes the socket.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket-activated Podman: accepts at once, answers `_ping` after `delay`.
    async fn slow_podman(delay: Duration) -> (tempfile::TempDir, String) {
        let answer = "HTTP/1.1 200 OK\r\nAPI-Version: 1.41\r\nLibpod-API-Version: 4.3.1\r\n\
                      Docker-Experimental: true\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\
                      Libpod-Buildah-Version: 1.28.0\r\nContent-Length: 2\r\n\r\nOK";
        super::super::fake::podman(Some(answer.to_string()), delay)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_podman_that_takes_seconds_to_start_is_waited_for() {
        let (_dir, url) = slow_podman(Duration::from_secs(3)).await;
        let connected = Podman::connect(Some(&url)).await;
        assert!(connected.is_ok(), "{:?}", connected.err());
    }
}
