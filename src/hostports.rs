//! Host ports for "any free port" (`host_port: 0`), picked by lanectl
//! itself rather than left to Podman.
//!
//! Podman 4.3 breaks a running container's port forwarding when another
//! container configured with the same host port fails to start: the failed
//! start's cleanup takes the first one's rules with it, and its endpoint
//! refuses every connection from then on. So a port is given to one lane
//! only. It must be:
//! - free now (bound and released);
//! - handed to no other lane within [`HANDED_OUT_FOR`] by any lanectl of
//!   this user, as the ledger says: Podman binds a port only at start, so
//!   two processes picking at once (a daemon beside a hook, two lanes
//!   directories) would otherwise both be told it is free.
//!
//! Ports configured on containers that do not run (a stopped lane's, another
//! tool's) are not looked for: that takes a list of every container, which
//! waits on each one's lock in Podman and so would tie every lane's create
//! to whatever any other container is going through.
//!
//! The ledger is one small file under a `flock`, in `$XDG_RUNTIME_DIR/lanectl`
//! (else in the temporary directory, private to the user). Where it cannot be
//! used, the same rules hold within this process only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::debug;

use crate::lock::FlockError;

/// How long a handed-out port is kept from other lanes.
pub const HANDED_OUT_FOR: Duration = Duration::from_secs(60);

/// How long the ledger's lock is waited for before this process goes on
/// with its own memory only (the lock is held for a read and a write).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Attempts at a fresh port before the pick is left to Podman.
const PICKS: usize = 16;

/// One port handed to one lane (`owner`: `instance/lane`) at `at_ms` (unix
/// milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at_ms: u64,
    pub port: u16,
    pub owner: String,
}

/// The ledger this process's entries live in when no file can be used, and
/// the lock that keeps this process's own picks in order.
static MEMORY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Where handed-out ports are written down.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: Option<PathBuf>,
}

impl Ledger {
    /// The ledger shared by this user's lanectl processes.
    pub fn of_this_user() -> Ledger {
        Ledger {
            path: default_path(),
        }
    }

    /// A ledger in the file `path` (its directory must exist).
    pub fn at(path: &Path) -> Ledger {
        Ledger {
            path: Some(path.to_path_buf()),
        }
    }

    /// Runs `f` on the fresh entries, holding the ledger, and writes back
    /// what it leaves.
    pub fn update<R>(&self, now_ms: u64, f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        let mut memory = crate::lock::lock(&MEMORY);
        let fresh = |e: &Entry| now_ms.saturating_sub(e.at_ms) < millis(HANDED_OUT_FOR);
        let file = self.path.as_deref().and_then(|p| match open_locked(p) {
            Ok(file) => Some(file),
            Err(e) => {
                debug!(ledger = %p.display(), error = %e, "host port ledger not usable; this process's picks only");
                None
            }
        });
        let Some(mut file) = file else {
            memory.retain(fresh);
            return f(&mut memory);
        };
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let mut entries: Vec<Entry> = parse(&text).into_iter().filter(fresh).collect();
        let result = f(&mut entries);
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(to_text(&entries).as_bytes()));
        if let Err(e) = written {
            debug!(error = %e, "could not write the host port ledger");
        }
        *memory = entries;
        result
    }
}

/// A port free on `ip` (tcp) that no lane holds, written down for `owner`
/// for [`HANDED_OUT_FOR`]: for a listener of lanectl's own, or a test's
/// container, that lanes must not be handed meanwhile.
pub fn hand_out(owner: &str, ip: &str) -> Option<u16> {
    let mut ports = [crate::podman::PortRequest {
        container_port: 0,
        host_ip: ip.to_string(),
        host_port: 0,
        protocol: "tcp".into(),
    }];
    let now = now_ms();
    Ledger::of_this_user().update(now, |entries| {
        assign(&mut ports, &[], owner, entries, now, free_port);
    });
    Some(ports[0].host_port).filter(|p| *p != 0)
}

/// Whether `port` on `ip` can be bound now.
pub fn free_port_at(ip: &str, port: u16, protocol: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    bind(std::net::SocketAddr::new(ip, port), protocol) == Some(port)
}

/// A port the kernel calls free on `ip` now (bound, then released).
pub fn free_port(ip: &str, protocol: &str) -> Option<u16> {
    let ip: std::net::IpAddr = ip.parse().ok()?;
    bind(std::net::SocketAddr::new(ip, 0), protocol)
}

/// Binds `addr` and releases it: the port bound, if it could be.
fn bind(addr: std::net::SocketAddr, protocol: &str) -> Option<u16> {
    let port = match protocol {
        "udp" => std::net::UdpSocket::bind(addr)
            .ok()?
            .local_addr()
            .ok()?
            .port(),
        _ => std::net::TcpListener::bind(addr)
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    };
    Some(port)
}

/// Gives each "any port" of `ports` (`host_port` 0) a port no other lane
/// holds, and writes down every port `owner` now has. `prefer`: a port per
/// entry of `ports` to give if no other lane holds it (the one the lane's
/// previous container had, already seen free). `pick`: a port the kernel
/// calls free for an address and protocol; `None` leaves the pick to Podman.
pub fn assign(
    ports: &mut [crate::podman::PortRequest],
    prefer: &[Option<u16>],
    owner: &str,
    entries: &mut Vec<Entry>,
    now_ms: u64,
    mut pick: impl FnMut(&str, &str) -> Option<u16>,
) {
    let held_by_others = |port: u16| entries.iter().any(|e| e.port == port && e.owner != owner);
    // Ports of this request already given: never one twice.
    let mut given: Vec<u16> = ports
        .iter()
        .map(|p| p.host_port)
        .filter(|p| *p != 0)
        .collect();
    for (i, port) in ports.iter_mut().enumerate() {
        if port.host_port != 0 {
            continue;
        }
        let usable = |p: u16, given: &[u16]| !given.contains(&p) && !held_by_others(p);
        let previous = prefer.get(i).copied().flatten();
        let kept = previous.filter(|p| usable(*p, &given));
        if previous.is_some() && kept.is_none() {
            debug!(port = ?previous, "the lane's previous host port is another lane's now; picking another");
        }
        let chosen = kept.or_else(|| {
            (0..PICKS)
                .map_while(|_| pick(&port.host_ip, &port.protocol)) // None: left to Podman
                .find(|p| usable(*p, &given))
        });
        if let Some(p) = chosen {
            port.host_port = p;
            given.push(p);
        }
    }
    for port in given {
        write_down(entries, owner, port, now_ms);
    }
}

/// Notes that `owner` has `port` as of `now_ms`.
fn write_down(entries: &mut Vec<Entry>, owner: &str, port: u16, now_ms: u64) {
    match entries
        .iter_mut()
        .find(|e| e.port == port && e.owner == owner)
    {
        Some(e) => e.at_ms = now_ms,
        None => entries.push(Entry {
            at_ms: now_ms,
            port,
            owner: owner.to_string(),
        }),
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The ledger's lines: `<unix ms> <port> <owner>`; others are skipped.
fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let at_ms = words.next()?.parse().ok()?;
            let port = words.next()?.parse().ok()?;
            let owner = words.next()?.to_string();
            Some(Entry { at_ms, port, owner })
        })
        .collect()
}

fn to_text(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| {
            let owner: String = e
                .owner
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            format!("{} {} {owner}\n", e.at_ms, e.port)
        })
        .collect()
}

/// `$XDG_RUNTIME_DIR/lanectl/host-ports`, else `lanectl-<uid>/host-ports` in
/// the temporary directory; looked up once per process.
fn default_path() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        ledger_path(runtime.as_deref(), &std::env::temp_dir(), uid)
    })
    .clone()
}

/// The ledger's file under `runtime` (an existing absolute directory), else
/// under `tmp`, its directory made private to `uid` if missing. `None` when
/// that directory is not `uid`'s own and private: another user could then
/// feed this one's picks, or read them.
fn ledger_path(runtime: Option<&Path>, tmp: &Path, uid: u32) -> Option<PathBuf> {
    let dir = match runtime.filter(|p| p.is_absolute() && p.is_dir()) {
        Some(runtime) => runtime.join("lanectl"),
        None => tmp.join(format!("lanectl-{uid}")),
    };
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        debug!(dir = %dir.display(), error = %e, "no host port ledger");
        return None;
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0;
    if !private {
        debug!(dir = %dir.display(), "no host port ledger: the directory is not private to this user");
        return None;
    }
    Some(dir.join("host-ports"))
}

/// Opens the ledger file (made if missing, never through a symlink) and
/// takes its lock, waiting up to [`LOCK_WAIT`].
fn open_locked(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    match crate::lock::flock(&file, LOCK_WAIT, Duration::from_millis(5), || {}) {
        Ok(()) => Ok(file),
        Err(FlockError::Os(e)) => Err(e),
        Err(FlockError::TimedOut(waited)) => Err(std::io::Error::other(format!(
            "held by another process for {waited:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podman::PortRequest;

    fn any_port() -> PortRequest {
        PortRequest {
            container_port: 80,
            host_ip: "127.0.0.1".into(),
            host_port: 0,
            protocol: "tcp".into(),
        }
    }

    /// `assign` for one "any port", with picks from `offered` in turn.
    fn one(
        now: u64,
        owner: &str,
        prefer: Option<u16>,
        entries: &mut Vec<Entry>,
        offered: &[u16],
    ) -> u16 {
        let mut ports = [any_port()];
        let mut offered = offered.iter().copied();
        assign(&mut ports, &[prefer], owner, entries, now, |_, _| {
            offered.next()
        });
        ports[0].host_port
    }

    const T: u64 = 10_000_000;

    #[test]
    fn a_port_another_lane_was_handed_is_not_handed_again() {
        let mut entries = Vec::new();
        assert_eq!(one(T, "i/a", None, &mut entries, &[5000]), 5000);
        // The kernel offers the same port to another lane's pick.
        assert_eq!(one(T, "i/b", None, &mut entries, &[5000, 5001]), 5001);
        // And to another process's lane of another instance.
        assert_eq!(one(T, "j/a", None, &mut entries, &[5001, 5000, 5002]), 5002);
        assert_eq!(entries.len(), 3, "{entries:?}");
    }

    #[test]
    fn the_previous_port_is_given_back_unless_another_lane_holds_it() {
        let mut entries = Vec::new();
        assert_eq!(one(T, "i/a", None, &mut entries, &[5000]), 5000);
        assert_eq!(one(T, "i/a", Some(5000), &mut entries, &[6000]), 5000);
        assert_eq!(entries.len(), 1, "written down once: {entries:?}");
        // Another lane was handed it meanwhile.
        assert_eq!(one(T, "i/b", Some(5000), &mut entries, &[6001]), 6001);
    }

    #[test]
    fn a_fixed_port_is_kept_and_written_down() {
        let mut entries = Vec::new();
        let mut ports = [PortRequest {
            host_port: 8080,
            ..any_port()
        }];
        assign(&mut ports, &[], "i/a", &mut entries, 1, |_, _| None);
        assert_eq!(ports[0].host_port, 8080);
        assert_eq!(one(T, "i/b", None, &mut entries, &[8080, 8081]), 8081);
    }

    #[test]
    fn with_no_port_offered_the_pick_is_left_to_podman() {
        let mut entries = Vec::new();
        assert_eq!(one(T, "i/a", None, &mut entries, &[]), 0);
        assert!(entries.is_empty());
    }

    #[test]
    fn the_ledger_file_is_shared_and_forgets_after_a_minute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host-ports");
        let one_process = Ledger::at(&path);
        let another = Ledger::at(&path);
        let t = T;
        one_process.update(t, |entries| {
            one(t, "i/a", None, entries, &[5000]);
        });
        let got = another.update(t + 1_000, |entries| {
            one(t + 1_000, "j/b", None, entries, &[5000, 5001])
        });
        assert_eq!(got, 5001, "the other process's pick is seen");
        let text = std::fs::read_to_string(&path).expect("ledger");
        assert_eq!(text, format!("{t} 5000 i/a\n{} 5001 j/b\n", t + 1_000));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let later = t + millis(HANDED_OUT_FOR) + 500;
        let got = another.update(later, |entries| one(later, "j/b", None, entries, &[5000]));
        assert_eq!(got, 5000, "a minute later the port may be handed out again");
        assert_eq!(
            std::fs::read_to_string(&path).expect("ledger"),
            format!("{} 5001 j/b\n{later} 5000 j/b\n", t + 1_000),
            "i/a's entry is forgotten, j/b's younger one kept"
        );
    }

    #[test]
    fn the_ledger_lives_in_a_directory_private_to_the_user() {
        let base = tempfile::tempdir().expect("tempdir");
        let (runtime, tmp) = (base.path().join("run"), base.path().join("tmp"));
        std::fs::create_dir_all(&runtime).expect("mkdir");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;

        let got = ledger_path(Some(&runtime), &tmp, uid);
        assert_eq!(got, Some(runtime.join("lanectl/host-ports")));
        assert_eq!(mode(&runtime.join("lanectl")), 0o700);
        // No runtime directory (unset, relative or missing): the temporary one.
        for runtime in [
            None,
            Some(Path::new("run")),
            Some(&*base.path().join("gone")),
        ] {
            let got = ledger_path(runtime, &tmp, uid);
            assert_eq!(got, Some(tmp.join(format!("lanectl-{uid}/host-ports"))));
        }
        assert_eq!(mode(&tmp.join(format!("lanectl-{uid}"))), 0o700);

        // One that others may write to, or that is not this user's, or a
        // symlink to a private one: no ledger.
        let open = base.path().join("open");
        std::fs::create_dir_all(open.join("lanectl-7")).expect("mkdir");
        std::fs::set_permissions(
            open.join("lanectl-7"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        assert_eq!(ledger_path(None, &open, 7), None, "not user 7's");
        std::fs::set_permissions(
            open.join("lanectl-7"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        std::fs::create_dir_all(open.join(format!("lanectl-{uid}"))).expect("mkdir");
        std::fs::set_permissions(
            open.join(format!("lanectl-{uid}")),
            std::fs::Permissions::from_mode(0o770),
        )
        .expect("chmod");
        assert_eq!(ledger_path(None, &open, uid), None, "group-writable");
        let linked = base.path().join("linked");
        std::fs::create_dir_all(&linked).expect("mkdir");
        std::os::unix::fs::symlink(
            runtime.join("lanectl"),
            linked.join(format!("lanectl-{uid}")),
        )
        .expect("symlink");
        assert_eq!(ledger_path(None, &linked, uid), None, "a symlink");
    }

    #[test]
    fn a_damaged_ledger_line_is_skipped() {
        assert_eq!(
            parse("12 5000 i/a\ngarbage\n13 notaport x\n14 5001\n15 5002 j/b\n"),
            [
                Entry {
                    at_ms: 12,
                    port: 5000,
                    owner: "i/a".into()
                },
                Entry {
                    at_ms: 15,
                    port: 5002,
                    owner: "j/b".into()
                }
            ]
        );
    }
}
