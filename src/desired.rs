//! The lanes directory as a whole -> what each lane wants.
//!
//! Lists the directory, checks who may command lanectl (SPEC.md "Safety"),
//! reads `_defaults.yaml` once, loads and resolves every lane, applies the
//! cross-lane rules, and checks each valid lane's codex and `track_content`
//! sources by the fingerprint's own rules and the permission policy
//! ([`content::check_source`]), so that what `apply` would refuse at hash time
//! is already `invalid` here, and `validate` shows it. Each lane ends up either valid (a `LaneSpec`) or invalid
//! (every problem, with positions); a problem of one lane never stops another.
//! Nothing here talks to Podman.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::content::{self, Policy, Shape};
use crate::lane::{self, DirListing, ListError};
use crate::lanespec::{self, LaneSpec};
use crate::manifest::{self, Problem, Seg, Source};

/// What one lane wants, or why it cannot be known.
#[derive(Debug, Clone)]
pub enum Desired {
    Valid {
        spec: Box<LaneSpec>,
        manifest_sha256: String,
    },
    Invalid {
        problems: Vec<Problem>,
        manifest_sha256: Option<String>,
    },
}

/// Every lane of a directory.
#[derive(Debug)]
pub struct DirState {
    pub lanes: BTreeMap<String, Desired>,
    pub listing: DirListing,
    /// sha256 of `_defaults.yaml`'s bytes, when there is one and it could
    /// be read: one of the inputs every lane's status answers to.
    pub defaults_sha256: Option<String>,
    /// Lanes whose `host` names another host, with that host: not lanes of
    /// this lanectl (SPEC.md "Beyond one host").
    pub elsewhere: BTreeMap<String, String>,
    /// This host's name, as the directory was read for it.
    pub here: Option<String>,
    /// Some lane's `host` names this host (valid or not).
    pub names_here: bool,
}

impl DirState {
    /// The distinct images of the valid lanes.
    pub fn images(&self) -> BTreeSet<&str> {
        self.lanes
            .values()
            .filter_map(|d| match d {
                Desired::Valid { spec, .. } => Some(spec.image.as_str()),
                Desired::Invalid { .. } => None,
            })
            .collect()
    }
}

/// How the directory is read.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub allow_insecure_permissions: bool,
    /// This host's name (`--host`): a lane whose `host` names another is
    /// not a lane here. `None`: every lane is (a test's view).
    pub host: Option<String>,
    /// Where bind-mount sources are: here (`apply`), or on the nodes a
    /// render is for (then one missing here, or a tracked one, is not
    /// checked).
    pub mounts: lanespec::MountsOn,
}

/// Reads the whole directory. Only a directory that cannot be listed is an
/// error; everything else is a lane's problem.
/// With no Podman to ask, a contested name or port makes every lane that
/// declares it invalid ([`Holders`]).
pub fn load_dir(dir: &Path, opts: LoadOptions) -> Result<DirState, ListError> {
    Ok(read_dir(dir, opts)?.settle(&Holders::default()))
}

/// Reads the whole directory up to the cross-lane rules, which
/// [`Unsettled::settle`] applies once it is known who holds what.
pub fn read_dir(dir: &Path, opts: LoadOptions) -> Result<Unsettled, ListError> {
    let policy = Policy::of_process(opts.allow_insecure_permissions);
    read(dir, policy, opts.host.as_deref(), opts.mounts)
}

/// [`load_dir`] under a given permission policy, for tests.
#[cfg(test)]
fn load(dir: &Path, policy: Policy) -> Result<DirState, ListError> {
    Ok(read(dir, policy, None, Default::default())?.settle(&Holders::default()))
}

/// [`read_dir`] under a given permission policy, for the host `here`.
fn read(
    dir: &Path,
    policy: Policy,
    here: Option<&str>,
    mounts: lanespec::MountsOn,
) -> Result<Unsettled, ListError> {
    let listing = lane::list_dir(dir)?;
    let check = policy.check;
    let dir_problem = if check {
        check_dir_chain(dir, policy).err()
    } else {
        None
    };

    let defaults = listing.defaults.as_ref().map(|path| {
        if let Some(why) = &listing.defaults_problem {
            return Err(vec![Problem::in_file(path, why.clone())]);
        }
        let perm = if check {
            check_file(path, policy).err()
        } else {
            None
        };
        match perm {
            Some(p) => Err(vec![p]),
            None => manifest::read_source(path),
        }
    });

    // Relative sources resolve against the directory's canonical path, so
    // that the hash does not depend on how `--dir` was spelled (a daemon
    // started through a symlink and a git hook given the physical path must
    // agree). Problems keep naming the files as the user spelled them.
    let base = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());

    // Each lane is loaded (its tree holds the defaults merged in) and
    // resolved at once, and its tree dropped: only one tree of the size of
    // the defaults lives at a time, whatever the number of lanes. What the
    // cross-lane rule needs is kept: the container name and where it stands.
    let mut lanes = BTreeMap::new();
    let mut resolved: BTreeMap<String, (Result<LaneSpec, Vec<Problem>>, String)> = BTreeMap::new();
    let mut names: BTreeMap<String, (String, Problem)> = BTreeMap::new();
    let mut fixed = Vec::new();
    let mut elsewhere = BTreeMap::new();
    let mut names_here = false;
    for (name, file) in &listing.lanes {
        let mut problems = Vec::new();
        if let Some(p) = &file.problem {
            problems.push(Problem::in_file(&file.path, p.clone()));
        }
        if let Some(p) = &dir_problem {
            problems.push(p.clone());
        }
        if check {
            problems.extend(check_file(&file.path, policy).err());
        }
        if let Some(Err(defaults_problems)) = &defaults {
            problems.extend(defaults_problems.iter().cloned());
        }
        let source = manifest::read_source(&file.path);
        let sha = source.as_ref().ok().map(|s| s.sha256.clone());
        let invalid = |problems| Desired::Invalid {
            problems,
            manifest_sha256: sha.clone(),
        };
        let source = match source {
            Ok(s) if problems.is_empty() => s,
            Ok(_) => {
                lanes.insert(name.clone(), invalid(problems));
                continue;
            }
            Err(p) => {
                problems.extend(p);
                lanes.insert(name.clone(), invalid(problems));
                continue;
            }
        };
        let defaults_source: Option<&Source> = defaults.as_ref().and_then(|d| d.as_ref().ok());
        match manifest::load(source, defaults_source) {
            Ok(l) => {
                // Another host's lane is not a lane here, whatever else is
                // wrong with it: its host says so.
                if let Some(host) = other_host(&l, here) {
                    elsewhere.insert(name.clone(), host);
                    continue;
                }
                names_here |= l.raw.host.is_some();
                // The cross-lane rule looks at every manifest that loaded,
                // valid or not: two lanes declaring one container name are
                // both invalid, whatever else is wrong with either.
                let container = lanespec::container_name(name, l.raw.container_name.as_deref());
                let at = l.problem(&[Seg::Key("container_name")], "");
                names.insert(name.clone(), (container, at));
                for (i, p) in l.raw.ports.iter().flatten().enumerate() {
                    let Some(port) = p.host_port.filter(|port| *port != 0) else {
                        continue;
                    };
                    let ip = p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
                    let at = l.problem(
                        &[Seg::Key("ports"), Seg::Index(i), Seg::Key("host_port")],
                        "",
                    );
                    fixed.push((name.clone(), (ip, port, p.protocol), at));
                }
                // Sources are checked for every lane that resolved, even
                // one about to clash: every problem of a lane at once.
                let spec = lanespec::resolve_for(name, &l, &base, mounts).and_then(|spec| {
                    let problems = check_sources(&spec, policy, mounts);
                    if problems.is_empty() {
                        Ok(spec)
                    } else {
                        Err(problems)
                    }
                });
                resolved.insert(name.clone(), (spec, l.sha256));
            }
            Err(p) => {
                lanes.insert(name.clone(), invalid(p));
            }
        }
    }

    let defaults_sha256 = defaults
        .as_ref()
        .and_then(|d| d.as_ref().ok())
        .map(|s| s.sha256.clone());
    Ok(Unsettled {
        lanes,
        resolved,
        names,
        fixed,
        listing,
        defaults_sha256,
        elsewhere,
        here: here.map(str::to_string),
        names_here,
    })
}

/// The lanes whose `host` names another host than `here`, with that host
/// (what `status` leaves out): each manifest only parsed, nothing resolved.
/// A lane that [`read_dir`] would find invalid before it learns the host (a
/// file refused by `policy`, a broken defaults file) is this host's, as
/// there.
pub fn elsewhere(
    dir: &Path,
    listing: &DirListing,
    here: &str,
    policy: Policy,
) -> BTreeMap<String, String> {
    let refused = |path: &Path| policy.check && check_file(path, policy).is_err();
    if policy.check && check_dir_chain(dir, policy).is_err() {
        return BTreeMap::new();
    }
    let defaults = match &listing.defaults {
        None => None,
        Some(path) if listing.defaults_problem.is_some() || refused(path) => {
            return BTreeMap::new();
        }
        Some(path) => match manifest::read_source(path) {
            Ok(source) => Some(source),
            Err(_) => return BTreeMap::new(),
        },
    };
    listing
        .lanes
        .iter()
        .filter(|(_, file)| file.problem.is_none() && !refused(&file.path))
        .filter_map(|(name, file)| {
            let source = manifest::read_source(&file.path).ok()?;
            let loaded = manifest::load(source, defaults.as_ref()).ok()?;
            Some((name.clone(), other_host(&loaded, Some(here))?))
        })
        .collect()
}

/// The host a loaded manifest names, when it is a hostname and not `here`.
/// A `host` that is not a hostname leaves the lane here, invalid.
fn other_host(loaded: &manifest::Loaded, here: Option<&str>) -> Option<String> {
    let (host, here) = (loaded.raw.host.as_deref()?, here?);
    let other = lanespec::check_host(host).is_ok() && !lanespec::is_this_host(host, here);
    other.then(|| host.to_string())
}

/// A directory read and every lane resolved, before the cross-lane rules:
/// who keeps a contested container name or host port depends on which
/// lane's container holds it now ([`Holders`]), which only Podman knows.
#[derive(Debug)]
pub struct Unsettled {
    /// Lanes already invalid on their own.
    lanes: BTreeMap<String, Desired>,
    /// Lanes that loaded: their spec (or every problem) and manifest digest.
    resolved: BTreeMap<String, (Result<LaneSpec, Vec<Problem>>, String)>,
    names: BTreeMap<String, (String, Problem)>,
    fixed: Vec<lanespec::FixedPort>,
    listing: DirListing,
    defaults_sha256: Option<String>,
    elsewhere: BTreeMap<String, String>,
    here: Option<String>,
    names_here: bool,
}

/// What the lanes' containers hold now. SPEC.md: in a clash, the lane whose
/// container already holds the name (any container of that name holds it,
/// running or not) or the fixed host port (a running container publishing
/// it) keeps it, and only the other lane is invalid; when none holds it,
/// all are.
#[derive(Debug, Default)]
pub struct Holders {
    /// Container name -> the lane whose container has it.
    names: HashMap<String, String>,
    /// (lane, host port, protocol) of every running container.
    ports: BTreeSet<(String, u16, String)>,
}

impl Holders {
    /// From this instance's containers by lane.
    pub fn of(containers: &BTreeMap<String, Vec<crate::container::Observed>>) -> Holders {
        let mut holders = Holders::default();
        for (lane, observed) in containers {
            for c in observed {
                holders.names.insert(c.name.clone(), lane.clone());
                if c.state != crate::container::State::Running {
                    continue;
                }
                for p in &c.ports {
                    holders
                        .ports
                        .insert((lane.clone(), p.host_port, p.protocol.clone()));
                }
            }
        }
        holders
    }
}

impl Unsettled {
    /// The distinct images of the lanes that resolved.
    pub fn images(&self) -> BTreeSet<&str> {
        self.specs().map(|(_, spec)| spec.image.as_str()).collect()
    }

    /// Every lane that resolved, clashing or not.
    pub fn specs(&self) -> impl Iterator<Item = (&String, &LaneSpec)> {
        self.resolved
            .iter()
            .filter_map(|(lane, (spec, _))| Some((lane, spec.as_ref().ok()?)))
    }

    /// Whether two lanes contest a container name or a fixed host port (only
    /// then does [`settle`](Self::settle) need to know who holds what).
    pub fn contested(&self) -> bool {
        let anyone = |_: &str, _: &str| false;
        let any_port = |_: &str, _: u16, _: crate::manifest::Protocol| false;
        !lanespec::check_across(&self.names, anyone).is_empty()
            || !lanespec::check_ports_across(&self.fixed, any_port).is_empty()
    }

    /// Applies the cross-lane rules, `holders` deciding who keeps what is
    /// contested.
    pub fn settle(self, holders: &Holders) -> DirState {
        let Unsettled {
            mut lanes,
            resolved,
            names,
            fixed,
            listing,
            defaults_sha256,
            elsewhere,
            here,
            names_here,
        } = self;
        let holds_name =
            |lane: &str, name: &str| holders.names.get(name).is_some_and(|l| l == lane);
        let holds_port = |lane: &str, port: u16, protocol: crate::manifest::Protocol| {
            holders
                .ports
                .contains(&(lane.to_string(), port, protocol.to_string()))
        };
        let mut across: HashMap<String, Vec<Problem>> = HashMap::new();
        for (lane, problem) in lanespec::check_across(&names, holds_name) {
            across.entry(lane).or_default().push(problem);
        }
        for (lane, problem) in lanespec::check_ports_across(&fixed, holds_port) {
            across.entry(lane).or_default().push(problem);
        }
        for (name, (spec, manifest_sha256)) in resolved {
            let desired = match (spec, across.remove(&name)) {
                (Ok(spec), None) => Desired::Valid {
                    spec: Box::new(spec),
                    manifest_sha256,
                },
                (Ok(_), Some(problems)) => Desired::Invalid {
                    problems,
                    manifest_sha256: Some(manifest_sha256),
                },
                (Err(mut problems), clash) => {
                    problems.extend(clash.into_iter().flatten());
                    Desired::Invalid {
                        problems,
                        manifest_sha256: Some(manifest_sha256),
                    }
                }
            };
            lanes.insert(name, desired);
        }
        DirState {
            lanes,
            listing,
            defaults_sha256,
            elsewhere,
            here,
            names_here,
        }
    }
}

/// The instance id `_defaults.yaml` declares (`instance: myapp`), which
/// travels with the directory through moves and symlink swaps; `None` when
/// it declares none (or there are no defaults). An unusable one is an error
/// with its position: guessing would mean acting as another instance.
pub fn declared_instance(dir: &Path) -> Result<Option<String>, String> {
    let Ok(listing) = lane::list_dir(dir) else {
        return Ok(None); // the pass itself says what is wrong with the directory
    };
    let Some(path) = listing.defaults else {
        return Ok(None);
    };
    if let Some(why) = listing.defaults_problem {
        return Err(why);
    }
    let source = manifest::read_source(&path).map_err(|problems| {
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        shown.join("; ")
    })?;
    let Some(node) = source.tree.as_ref().and_then(|t| t.get("instance")) else {
        return Ok(None);
    };
    let at = |message: String| {
        Problem {
            pos: Some(node.pos.clone()),
            file: path.clone(),
            message,
        }
        .to_string()
    };
    let id = node
        .as_str()
        .ok_or_else(|| at("instance must be a string".into()))?;
    crate::labels::instance_id(id)
        .map(Some)
        .map_err(|why| at(format!("instance {id:?} {why}")))
}

/// A file that only root (or the user lanectl runs as) can write.
fn check_file(path: &Path, policy: Policy) -> Result<(), Problem> {
    let meta =
        std::fs::metadata(path).map_err(|e| Problem::in_file(path, format!("cannot stat: {e}")))?;
    policy
        .content(&meta, path)
        .map_err(|m| Problem::in_file(path, m))
}

/// The lanes directory, and its parents up to `/`.
fn check_dir_chain(dir: &Path, policy: Policy) -> Result<(), Problem> {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    check_file(&abs, policy)?;
    for parent in abs.ancestors().skip(1) {
        let meta = std::fs::metadata(parent)
            .map_err(|e| Problem::in_file(parent, format!("cannot stat: {e}")))?;
        policy
            .parent(&meta, parent)
            .map_err(|m| Problem::in_file(parent, m))?;
    }
    Ok(())
}

/// Codex and `track_content` sources: what the files alone show (see
/// [`content::check_source`]: the fingerprint's own rules, and who could have
/// written there), every problem with its path, at most
/// [`Findings::LIMIT`](content::Findings::LIMIT) per source.
fn check_sources(spec: &LaneSpec, policy: Policy, mounts: lanespec::MountsOn) -> Vec<Problem> {
    let codex = spec.codex.iter().map(|c| (&c.source, Shape::Dir));
    let here = mounts == lanespec::MountsOn::ThisMachine;
    let tracked = spec
        .mounts
        .iter()
        .filter(|m| here && m.track_content)
        .map(|m| (&m.source, Shape::DirOrFile));
    let mut problems = Vec::new();
    for (source, shape) in codex.chain(tracked) {
        let found = content::check_source(source, shape, policy);
        problems.extend(
            found
                .found
                .into_iter()
                .map(|f| Problem::in_file(&f.path, f.message)),
        );
        if found.more > 0 {
            problems.push(Problem::in_file(
                source,
                format!("and {} more problems below", found.more),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::PathBuf;

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Checks as lanectl does as root, whoever runs the test (files are owned
    /// by the user running it, trusted as lanectl's own).
    fn strict() -> Policy {
        Policy {
            check: true,
            euid: euid(),
        }
    }

    /// lanectl as root with `--allow-insecure-permissions`.
    fn allowed() -> Policy {
        Policy::for_user(0, true)
    }

    /// Gives `paths` (not following symlinks) to uid 1234, a non-root user
    /// other than lanectl's, and returns the policy of lanectl as root. Only
    /// root can give a file away: anyone else fails the test here, saying so
    /// (checking as if lanectl were another user instead would make every file
    /// of the test someone else's, and the first problem would hide the rest).
    fn given_away(paths: &[&Path]) -> Policy {
        assert_eq!(
            euid(),
            0,
            "this test needs root: it gives files to another user (chown); CI runs as root"
        );
        for path in paths {
            std::os::unix::fs::lchown(path, Some(1234), None).unwrap();
        }
        strict()
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A root dir holding `lanes.d/a.yaml` (`yaml`), all in safe modes.
    fn lane_with(yaml: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        set_mode(root.path(), 0o755);
        let lanes = root.path().join("lanes.d");
        std::fs::create_dir(&lanes).unwrap();
        set_mode(&lanes, 0o755);
        std::fs::write(lanes.join("a.yaml"), yaml).unwrap();
        set_mode(&lanes.join("a.yaml"), 0o644);
        root
    }

    /// A file under `root` with `mode`, its directories made 0755.
    fn file_in(root: &Path, rel: &str, mode: u32) -> PathBuf {
        let path = root.join(rel);
        let parent = path.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        set_mode(parent, 0o755);
        std::fs::write(&path, "x").unwrap();
        set_mode(&path, mode);
        path
    }

    /// Lane `a`'s problems under `policy`, as `validate` prints them.
    fn problems_of(root: &Path, policy: Policy) -> Vec<String> {
        lane_problems(root, "a", policy)
    }

    /// A lane's problems under `policy`, as `validate` prints them.
    fn lane_problems(root: &Path, lane: &str, policy: Policy) -> Vec<String> {
        let state = load(&root.join("lanes.d"), policy).unwrap();
        match &state.lanes[lane] {
            Desired::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            Desired::Valid { .. } => Vec::new(),
        }
    }

    /// Whether some problem is about `path` and says `what`.
    fn names(problems: &[String], path: &Path, what: &str) -> bool {
        let head = format!("{}: ", path.display());
        problems
            .iter()
            .any(|p| p.starts_with(&head) && p.contains(what))
    }

    /// The directory as the lanectl of host `here` reads it.
    fn on_host(root: &Path, here: &str) -> DirState {
        read(
            &root.join("lanes.d"),
            Policy::OFF,
            Some(here),
            Default::default(),
        )
        .unwrap()
        .settle(&Holders::default())
    }

    #[test]
    fn a_lane_for_another_host_is_not_a_lane_here_and_clashes_with_nothing() {
        let root = lane_with(
            "image: i
host: web-2
container_name: shared
",
        );
        let b = root.path().join("lanes.d/b.yaml");
        std::fs::write(
            &b,
            "image: i
host: WEB-1
container_name: shared
",
        )
        .unwrap();
        // Another host's lane is skipped even when it is invalid: its
        // sources are on that host.
        let c = root.path().join("lanes.d/c.yaml");
        std::fs::write(
            &c,
            "image: i
host: web-2
mounts: [{source: /nowhere, target: /x}]
",
        )
        .unwrap();

        let web1 = on_host(root.path(), "web-1");
        assert_eq!(web1.lanes.keys().collect::<Vec<_>>(), ["b"]);
        assert!(
            matches!(web1.lanes["b"], Desired::Valid { .. }),
            "{:?}",
            web1.lanes
        );
        let skipped: Vec<_> = web1.elsewhere.iter().collect();
        assert_eq!(
            skipped,
            [
                (&"a".into(), &"web-2".into()),
                (&"c".into(), &"web-2".into())
            ]
        );

        let web2 = on_host(root.path(), "web-2");
        assert_eq!(web2.lanes.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert!(matches!(web2.lanes["a"], Desired::Valid { .. }));
        assert!(matches!(web2.lanes["c"], Desired::Invalid { .. }));
        assert_eq!(web2.elsewhere.keys().collect::<Vec<_>>(), ["b"]);
        let lanes = root.path().join("lanes.d");
        assert_eq!(
            elsewhere(&lanes, &web2.listing, "web-2", Policy::OFF)
                .keys()
                .collect::<Vec<_>>(),
            ["b"]
        );

        // A host no lane names: every lane is elsewhere, an empty set that
        // the prune guard refuses to act on.
        let web3 = on_host(root.path(), "web-3");
        assert!(web3.lanes.is_empty());
        assert!(crate::reconcile::world::refuses_to_prune(&web3, false));

        // A broken defaults file makes every lane invalid here, so none is
        // another host's (status then lists them all, as apply reports them).
        std::fs::write(lanes.join("_defaults.yaml"), "env: [\n").unwrap();
        let listing = lane::list_dir(&lanes).unwrap();
        assert!(elsewhere(&lanes, &listing, "web-2", Policy::OFF).is_empty());
        assert!(on_host(root.path(), "web-2").elsewhere.is_empty());
    }

    #[test]
    fn a_host_in_the_defaults_places_every_lane_and_a_lane_may_override_it() {
        let root = lane_with(
            "image: i
",
        );
        let lanes = root.path().join("lanes.d");
        std::fs::write(
            lanes.join("_defaults.yaml"),
            "host: web-2
",
        )
        .unwrap();
        std::fs::write(
            lanes.join("b.yaml"),
            "image: i
host: web-1
",
        )
        .unwrap();
        let web1 = on_host(root.path(), "web-1");
        assert_eq!(web1.lanes.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(web1.elsewhere.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_host_that_is_not_a_hostname_makes_the_lane_invalid_on_every_host() {
        for bad in ["web 1", "-web", "web_1", "", "a..b"] {
            let root = lane_with(&format!(
                "image: i
host: {bad:?}
"
            ));
            let state = on_host(root.path(), "web-1");
            let Desired::Invalid { problems, .. } = &state.lanes["a"] else {
                panic!("{bad:?} accepted: {:?}", state.lanes["a"]);
            };
            let text = problems[0].to_string();
            assert!(text.contains("a.yaml:2:7: host"), "{text}");
            assert!(text.contains("is not a hostname"), "{text}");
        }
        let root = lane_with(
            "image: i
host: [web-1]
",
        );
        let state = on_host(root.path(), "web-1");
        assert!(matches!(state.lanes["a"], Desired::Invalid { .. }));
    }

    #[test]
    fn two_lanes_publishing_one_fixed_host_port_are_both_invalid() {
        let root = lane_with("image: i\nports: [{container: 80, host_port: 18080}]\n");
        let write = |lane: &str, yaml: &str| {
            let path = root.path().join(format!("lanes.d/{lane}.yaml"));
            std::fs::write(&path, yaml).unwrap();
            set_mode(&path, 0o644);
        };
        write(
            "b",
            "image: i\nports: [{container: 81, host_ip: 0.0.0.0, host_port: 18080}]\n",
        );
        write(
            "c",
            "image: i\nports: [{container: 80, host_port: 18080, protocol: udp}]\n",
        );
        let a = lane_problems(root.path(), "a", Policy::OFF);
        let b = lane_problems(root.path(), "b", Policy::OFF);
        assert!(
            a.iter().any(|p| p.contains("also published by lane b")),
            "{a:?}"
        );
        assert!(
            b.iter().any(|p| p.contains("also published by lane a")),
            "{b:?}"
        );
        assert!(
            a.iter().all(|p| !p.contains("lane c")),
            "udp is another port: {a:?}"
        );
        assert!(lane_problems(root.path(), "c", Policy::OFF).is_empty());
    }

    /// Problems of each lane once `holders` settled the clashes.
    fn settled(root: &Path, holders: &Holders) -> BTreeMap<String, Vec<String>> {
        let state = read(&root.join("lanes.d"), Policy::OFF, None, Default::default())
            .unwrap()
            .settle(holders);
        state
            .lanes
            .into_iter()
            .map(|(lane, d)| match d {
                Desired::Invalid { problems, .. } => {
                    (lane, problems.iter().map(|p| p.to_string()).collect())
                }
                Desired::Valid { .. } => (lane, Vec::new()),
            })
            .collect()
    }

    #[test]
    fn the_lane_holding_a_contested_name_or_port_keeps_it_and_only_the_newcomer_is_invalid() {
        let root = lane_with(
            "image: i\ncontainer_name: shared\nports: [{container: 80, host_port: 18080}]\n",
        );
        let b = root.path().join("lanes.d/b.yaml");
        std::fs::write(
            &b,
            "image: i\ncontainer_name: shared\nports: [{container: 80, host_port: 18080}]\n",
        )
        .unwrap();
        set_mode(&b, 0o644);

        let mut holders = Holders::default();
        holders.names.insert("shared".into(), "a".into());
        holders.ports.insert(("a".into(), 18080, "tcp".into()));
        let lanes = settled(root.path(), &holders);
        assert!(
            lanes["a"].is_empty(),
            "the holder keeps both: {:?}",
            lanes["a"]
        );
        let b = &lanes["b"];
        assert!(
            b.iter()
                .any(|p| p.contains("container name shared is held by lane a")),
            "{b:?}"
        );
        assert!(
            b.iter()
                .any(|p| p.contains("host port 18080/tcp on 127.0.0.1 is held by lane a")),
            "{b:?}"
        );

        // A container of another lane (say a renamed manifest's) holding
        // the name decides nothing between these two: both are invalid.
        let mut holders = Holders::default();
        holders.names.insert("shared".into(), "gone".into());
        let lanes = settled(root.path(), &holders);
        assert!(
            lanes["a"].iter().any(|p| p.contains("also used by lane b")),
            "{:?}",
            lanes["a"]
        );
        assert!(
            lanes["b"].iter().any(|p| p.contains("also used by lane a")),
            "{:?}",
            lanes["b"]
        );
        assert!(
            lanes["a"]
                .iter()
                .any(|p| p.contains("also published by lane b")),
            "{:?}",
            lanes["a"]
        );
    }

    #[test]
    fn two_lanes_with_one_container_name_are_both_invalid_even_if_one_is_invalid_anyway() {
        let root = lane_with("image: i\ncontainer_name: shared\nports: [{container: 0}]\n");
        let b = root.path().join("lanes.d/b.yaml");
        std::fs::write(&b, "image: i\ncontainer_name: shared\n").unwrap();
        set_mode(&b, 0o644);
        let a = lane_problems(root.path(), "a", Policy::OFF);
        let b = lane_problems(root.path(), "b", Policy::OFF);
        assert!(
            a.iter().any(|p| p.contains("port 0 is out of range")),
            "{a:?}"
        );
        assert!(a.iter().any(|p| p.contains("also used by lane b")), "{a:?}");
        assert!(b.iter().any(|p| p.contains("also used by lane a")), "{b:?}");
    }

    #[test]
    fn a_codex_source_given_as_a_symlink_to_a_group_writable_dir_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "real/config.toml", 0o644);
        let real = root.path().join("real");
        set_mode(&real, 0o775);
        symlink("real", root.path().join("link")).unwrap();
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &real, "writable by group"), "{problems:?}");
        assert!(names(&problems, &real, "chmod go-w"), "{problems:?}");
        assert!(problems_of(root.path(), Policy::OFF).is_empty());
    }

    #[test]
    fn a_codex_source_whose_real_parent_others_can_write_without_the_sticky_bit_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "open/codex/config.toml", 0o644);
        let open = root.path().join("open");
        set_mode(&open, 0o777);
        symlink("open/codex", root.path().join("link")).unwrap();
        let problems = problems_of(root.path(), strict());
        assert!(
            names(&problems, &open, "without the sticky bit"),
            "{problems:?}"
        );
        set_mode(&open, 0o1777);
        assert_eq!(problems_of(root.path(), strict()), Vec::<String>::new());
    }

    #[test]
    fn a_track_content_source_given_as_a_symlink_to_a_group_writable_file_is_refused() {
        let root = lane_with(
            "image: i\nmounts: [{source: ../link.txt, target: /t, track_content: true}, \
             {source: ../tree, target: /u, track_content: true}]\n",
        );
        let real = file_in(root.path(), "real.txt", 0o664);
        symlink("real.txt", root.path().join("link.txt")).unwrap();
        let deep = file_in(root.path(), "tree/sub/deep.txt", 0o646);
        set_mode(&root.path().join("tree"), 0o755);
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &real, "writable by group"), "{problems:?}");
        assert!(names(&problems, &deep, "writable by group"), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn a_source_given_as_a_symlink_owned_by_another_user_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "real/config.toml", 0o644);
        let link = root.path().join("link");
        symlink("real", &link).unwrap();
        let problems = problems_of(root.path(), given_away(&[&link]));
        assert!(names(&problems, &link, "owned by uid"), "{problems:?}");
        assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
    }

    #[test]
    fn every_problem_of_a_codex_tree_is_reported_up_to_a_limit() {
        let root = lane_with("image: i\ncodex: {source: ../codex, target: /c}\n");
        file_in(root.path(), "codex/ok.txt", 0o644);
        let fifos = content::Findings::LIMIT + 5;
        for i in 0..fifos {
            let fifo = root.path().join(format!("codex/pipe{i:02}"));
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let problems = problems_of(root.path(), Policy::OFF);
        assert_eq!(problems.len(), content::Findings::LIMIT + 1, "{problems:?}");
        assert!(
            problems[..content::Findings::LIMIT]
                .iter()
                .all(|p| p.contains("pipe") && p.contains("a FIFO"))
        );
        let codex = root.path().join("codex");
        assert!(
            names(&problems, &codex, "and 5 more problems"),
            "{problems:?}"
        );
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn one_bad_lane_does_not_stop_the_others() {
        let dir = dir_with(&[("a.yaml", "image: i\n"), ("b.yaml", "image: [\n")]);
        let state = load_dir(dir.path(), LoadOptions::default()).unwrap();
        assert!(matches!(state.lanes["a"], Desired::Valid { .. }));
        assert!(matches!(state.lanes["b"], Desired::Invalid { .. }));
    }

    #[test]
    fn two_lanes_with_one_container_name_are_both_invalid() {
        let dir = dir_with(&[
            ("a.yaml", "image: i\ncontainer_name: same\n"),
            ("b.yaml", "image: i\ncontainer_name: same\n"),
        ]);
        let state = load_dir(dir.path(), LoadOptions::default()).unwrap();
        for lane in ["a", "b"] {
            let Desired::Invalid { problems, .. } = &state.lanes[lane] else {
                panic!("{lane} should be invalid");
            };
            assert!(problems[0].to_string().contains(":2:"), "{:?}", problems);
        }
    }

    const FIX: &str = "--allow-insecure-permissions";

    #[test]
    fn a_manifest_writable_by_group_or_others_is_refused() {
        for mode in [0o664, 0o646, 0o666] {
            let root = lane_with("image: i\n");
            let manifest = root.path().join("lanes.d/a.yaml");
            set_mode(&manifest, mode);
            let problems = problems_of(root.path(), strict());
            assert!(
                names(&problems, &manifest, "writable by group or others"),
                "{mode:o}: {problems:?}"
            );
            assert!(names(&problems, &manifest, FIX), "{problems:?}");
            assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
        }
        let root = lane_with("image: i\n");
        assert_eq!(problems_of(root.path(), strict()), Vec::<String>::new());
    }

    #[test]
    fn a_defaults_file_writable_by_group_or_others_refuses_every_lane() {
        let root = lane_with("image: i\n");
        let lanes = root.path().join("lanes.d");
        file_in(&lanes, "b.yaml", 0o644);
        std::fs::write(lanes.join("b.yaml"), "image: i\n").unwrap();
        let defaults = file_in(&lanes, "_defaults.yaml", 0o664);
        std::fs::write(&defaults, "user: root\n").unwrap();
        for lane in ["a", "b"] {
            let problems = lane_problems(root.path(), lane, strict());
            assert!(
                names(&problems, &defaults, "writable by group or others"),
                "{lane}: {problems:?}"
            );
            assert_eq!(
                lane_problems(root.path(), lane, allowed()),
                Vec::<String>::new()
            );
        }
        set_mode(&defaults, 0o644);
        assert_eq!(problems_of(root.path(), strict()), Vec::<String>::new());
    }

    #[test]
    fn a_lanes_dir_writable_by_group_or_others_is_refused() {
        for mode in [0o775, 0o757, 0o777] {
            let root = lane_with("image: i\n");
            let lanes = root.path().join("lanes.d");
            set_mode(&lanes, mode);
            let problems = problems_of(root.path(), strict());
            assert!(
                names(&problems, &lanes, "writable by group or others"),
                "{mode:o}: {problems:?}"
            );
            assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
        }
    }

    #[test]
    fn a_parent_of_the_lanes_dir_that_others_can_write_needs_the_sticky_bit() {
        let root = lane_with("image: i\n");
        set_mode(root.path(), 0o777);
        let problems = problems_of(root.path(), strict());
        assert!(
            names(
                &problems,
                root.path(),
                "writable by others without the sticky bit"
            ),
            "{problems:?}"
        );
        assert!(names(&problems, root.path(), FIX), "{problems:?}");
        assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
        for fine in [0o1777, 0o775, 0o1757] {
            set_mode(root.path(), fine);
            let problems = problems_of(root.path(), strict());
            assert_eq!(problems, Vec::<String>::new(), "{fine:o}");
        }
    }

    #[test]
    fn a_manifest_defaults_lanes_dir_or_parent_owned_by_another_user_is_refused() {
        for rel in ["lanes.d/a.yaml", "lanes.d/_defaults.yaml", "lanes.d", "."] {
            let root = lane_with("image: i\n");
            let defaults = file_in(root.path(), "lanes.d/_defaults.yaml", 0o644);
            std::fs::write(&defaults, "user: root\n").unwrap();
            let path = if rel == "." {
                root.path().to_path_buf()
            } else {
                root.path().join(rel)
            };
            let path = path.as_path();
            let problems = problems_of(root.path(), given_away(&[path]));
            assert!(
                names(&problems, path, "owned by uid"),
                "{rel}: {problems:?}"
            );
            assert!(names(&problems, path, FIX), "{rel}: {problems:?}");
            assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
        }
    }

    #[test]
    fn a_codex_dir_or_a_file_deep_in_it_writable_by_group_or_others_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../codex, target: /c}\n");
        file_in(root.path(), "codex/config.toml", 0o644);
        let deep = file_in(root.path(), "codex/sessions/2026/auth.json", 0o646);
        let codex = root.path().join("codex");
        set_mode(&codex, 0o775);
        let problems = problems_of(root.path(), strict());
        assert!(
            names(&problems, &codex, "writable by group"),
            "{problems:?}"
        );
        assert!(names(&problems, &deep, "writable by group"), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
    }

    #[test]
    fn a_track_content_dir_or_file_writable_by_group_or_others_is_refused() {
        let root = lane_with(
            "image: i\nmounts: [{source: ../tree, target: /t, track_content: true}, \
             {source: ../file.txt, target: /f, track_content: true}, \
             {source: ../open, target: /o}]\n",
        );
        let deep = file_in(root.path(), "tree/sub/deep.txt", 0o644);
        let tree = root.path().join("tree");
        set_mode(&tree, 0o757);
        let file = file_in(root.path(), "file.txt", 0o664);
        // Without track_content a mount's files are not read: not checked.
        file_in(root.path(), "open/x", 0o666);
        set_mode(&root.path().join("open"), 0o777);
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &tree, "writable by group"), "{problems:?}");
        assert!(names(&problems, &file, "writable by group"), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        set_mode(&deep, 0o666);
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &deep, "writable by group"), "{problems:?}");
        assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
    }

    #[test]
    fn codex_and_track_content_sources_owned_by_another_user_are_refused() {
        let root = lane_with(
            "image: i\ncodex: {source: ../codex, target: /c}\nmounts: [\
             {source: ../tree, target: /t, track_content: true}, \
             {source: ../file.txt, target: /f, track_content: true}]\n",
        );
        let deep_codex = file_in(root.path(), "codex/sub/auth.json", 0o600);
        let deep_tree = file_in(root.path(), "tree/sub/x.txt", 0o644);
        let file = file_in(root.path(), "file.txt", 0o644);
        let (codex, tree) = (root.path().join("codex"), root.path().join("tree"));
        let foreign: [&Path; 5] = [&codex, &deep_codex, &tree, &deep_tree, &file];
        let problems = problems_of(root.path(), given_away(&foreign));
        for path in foreign {
            assert!(
                names(&problems, path, "owned by uid"),
                "{}: {problems:?}",
                path.display()
            );
        }
        assert_eq!(problems_of(root.path(), allowed()), Vec::<String>::new());
    }

    #[test]
    fn the_rule_applies_to_root_unless_insecure_permissions_are_allowed() {
        assert!(Policy::for_user(0, false).check);
        assert!(!Policy::for_user(0, true).check);
        assert!(!Policy::for_user(1000, false).check);
        assert_eq!(Policy::of_process(false), Policy::for_user(euid(), false));
        // The entry point `validate` and `apply` use, whoever runs the test.
        let root = lane_with("image: i\n");
        set_mode(&root.path().join("lanes.d/a.yaml"), 0o666);
        let opts = LoadOptions {
            allow_insecure_permissions: true,
            host: None,
            mounts: Default::default(),
        };
        let state = load_dir(&root.path().join("lanes.d"), opts).unwrap();
        assert!(matches!(state.lanes["a"], Desired::Valid { .. }));
    }
}
