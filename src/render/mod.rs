//! `render kube`: lanes as Kubernetes objects (SPEC.md "Beyond one host").
//!
//! Per lane, in the order they are applied: the codex as an immutable
//! Secret named after its fingerprint (a new codex is a new Secret and a new
//! pod template, so it rolls the pods, like kustomize's hash-suffixed
//! generators), a Deployment whose init container copies the Secret's files
//! into a writable emptyDir at the codex target (a copy, never a mount, as on
//! Podman), and a Service for its ports. What has no Kubernetes equivalent
//! is a warning placed at the manifest's `file:line:col` (an error under
//! `--strict`); what cannot work at all (a codex over a Secret's 1 MiB) is
//! an error of the lane. Deterministic: the same lanes give the same bytes
//! on any machine, and no Podman is asked anything (the hash annotation
//! leaves out the local image ID and tracked content).

mod objects;
mod units;

pub use units::object_name;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::content::{self, Policy};
use crate::lanespec::{LaneSpec, Mount};
use crate::manifest::{self, DesiredState, Loaded, Problem, Protocol, Relabel, Seg, UpdateOrder};
use objects::{
    Container, ContainerPort, Deployment, DeploymentSpec, EmptyDir, EnvVar, HostPath, HttpGet, Map,
    Meta, Object, PodSpec, PodTemplate, ReadinessProbe, ResourceRequirements, RollingUpdate,
    Secret, SecretVolume, Selector, Service, ServicePort, ServiceSpec, Strategy, Volume,
    VolumeMount,
};

pub use objects::Kustomization;

/// A Secret holds at most this much (Kubernetes refuses a larger one).
pub const SECRET_LIMIT: usize = 1 << 20;

/// A codex whose Secret client-side `kubectl apply` can still take: the
/// last-applied annotation holds the data base64-encoded, within 256 KiB.
const CLIENT_SIDE_LIMIT: usize = 180 * 1024;

/// Where the init container finds the codex Secret's files.
const CODEX_FILES: &str = "/.lanectl-codex-files";

/// The first line of every file `render` writes (and how `-o DIR` knows
/// which files there are its own).
pub const HEADER: &str = "# Rendered by `lanectl render kube`";

/// What a render needs besides the lanes.
#[derive(Debug, Clone)]
pub struct Options {
    /// `io.lanectl.instance` on every object.
    pub instance: String,
    /// `metadata.namespace` of every object (none: the kubectl context's).
    pub namespace: Option<String>,
    /// The lanes directory's path on the nodes, under which a relative
    /// mount source is placed.
    pub node_dir: NodeDir,
    /// Warnings are errors.
    pub strict: bool,
}

/// The lanes directory's path on the nodes.
#[derive(Debug, Clone)]
pub enum NodeDir {
    /// `--node-dir`.
    Given(PathBuf),
    /// Its path here, for want of one: it ties the render to this machine
    /// (a warning where it is used).
    Here(PathBuf),
}

impl NodeDir {
    fn path(&self) -> &Path {
        match self {
            NodeDir::Given(p) | NodeDir::Here(p) => p,
        }
    }
}

/// What a render needs of this machine, read before the mapping (which is
/// then a function of the lane alone): the codex's files, and what each
/// mount source is here.
#[derive(Debug)]
pub struct Inputs {
    codex: Option<Result<CodexFiles, String>>,
    /// Per mount: a file here, a directory here, or absent here.
    mounts: Vec<Option<SourceHere>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceHere {
    File,
    Dir,
}

/// Reads what [`lane`] needs of this machine for `spec`: the codex as the
/// copy into a container takes it (read as `apply` reads it, under
/// `policy`), and the kind of each mount source.
pub fn read_inputs(spec: &LaneSpec, policy: Policy) -> Inputs {
    Inputs {
        codex: spec
            .codex
            .as_ref()
            .map(|c| codex_files(&c.source, &c.target, policy)),
        mounts: spec
            .mounts
            .iter()
            .map(|m| match std::fs::metadata(&m.source) {
                Ok(meta) if meta.is_file() => Some(SourceHere::File),
                Ok(_) => Some(SourceHere::Dir),
                Err(_) => None,
            })
            .collect(),
    }
}

/// One lane rendered.
#[derive(Debug)]
pub struct Lane {
    /// Its objects' name.
    pub name: String,
    pub objects: Vec<Object>,
    /// What did not map, at the manifest's positions.
    pub warnings: Vec<Problem>,
}

impl Lane {
    /// The lane's objects as one YAML stream, headed by where they come from.
    pub fn yaml(&self, lane: &str, file: &str) -> Result<String, serde_saphyr::SerializeError> {
        let mut out = format!("{HEADER} from {file} (lane {lane}): edit the manifest, not this\n");
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&crate::yaml::to_string(object)?);
        }
        Ok(out)
    }
}

/// Renders one valid lane; `loaded` is its manifest, for positions, and
/// `inputs` what [`read_inputs`] read for it. `Err`: every error (and,
/// under `--strict`, every warning) of the lane.
pub fn lane(
    spec: &LaneSpec,
    loaded: &Loaded,
    inputs: &Inputs,
    opts: &Options,
) -> Result<Lane, Vec<Problem>> {
    let mut r = Renderer {
        spec,
        loaded,
        inputs,
        opts,
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let lane = r.render();
    let Renderer {
        mut warnings,
        mut errors,
        ..
    } = r;
    if opts.strict {
        errors.append(&mut warnings);
    }
    match lane {
        Some(objects) if errors.is_empty() => Ok(Lane {
            warnings: {
                Problem::sort_by_position(&mut warnings);
                warnings
            },
            name: units::object_name(&spec.lane),
            objects,
        }),
        _ => {
            Problem::sort_by_position(&mut errors);
            Err(errors)
        }
    }
}

/// Lanes whose names map to one Kubernetes name: each such lane with the
/// others it collides with.
pub fn collisions<'a>(lanes: impl Iterator<Item = &'a str>) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for lane in lanes {
        by_name
            .entry(units::object_name(lane))
            .or_default()
            .push(lane.to_string());
    }
    let mut out = BTreeMap::new();
    for (name, lanes) in by_name.into_iter().filter(|(_, l)| l.len() > 1) {
        for lane in &lanes {
            let others: Vec<&str> = lanes
                .iter()
                .filter(|l| *l != lane)
                .map(String::as_str)
                .collect();
            out.insert(
                lane.clone(),
                vec![format!(
                    "lane {lane} and lane {} both become the Kubernetes name {name}: rename one manifest",
                    others.join(", ")
                )],
            );
        }
    }
    out
}

/// The manifest of `lane` loaded again with its defaults, for positions.
pub fn load_manifest(file: &Path, defaults: Option<&Path>) -> Option<Loaded> {
    let defaults = defaults.and_then(|d| manifest::read_source(d).ok());
    manifest::load(manifest::read_source(file).ok()?, defaults.as_ref()).ok()
}

struct Renderer<'a> {
    spec: &'a LaneSpec,
    loaded: &'a Loaded,
    inputs: &'a Inputs,
    opts: &'a Options,
    warnings: Vec<Problem>,
    errors: Vec<Problem>,
}

impl Renderer<'_> {
    fn warn(&mut self, path: &[Seg], message: String) {
        self.warnings.push(self.loaded.problem(path, message));
    }

    fn error(&mut self, path: &[Seg], message: String) {
        self.errors.push(self.loaded.problem(path, message));
    }

    fn render(&mut self) -> Option<Vec<Object>> {
        let spec = self.spec;
        let name = units::object_name(&spec.lane);
        let labels = self.labels()?;
        let codex = match &spec.codex {
            Some(_) => Some(self.codex(&name)?),
            None => None,
        };
        let fingerprint = codex.as_ref().map(|c| c.fingerprint.clone());
        let mut annotations = Map::from([(
            crate::labels::SPEC_HASH.into(),
            self.hash(fingerprint.as_deref()),
        )]);
        if let Some(fp) = &fingerprint {
            annotations.insert(crate::labels::CODEX_FINGERPRINT.into(), fp.clone());
        }
        let meta = |name: &str, annotations: Map| Meta {
            name: name.to_string(),
            namespace: self.opts.namespace.clone(),
            labels: labels.clone(),
            annotations,
        };

        let (volumes, mounts) = self.volumes(codex.as_ref());
        let main = Container {
            name: name.clone(),
            image: spec.image.clone(),
            command: spec.entrypoint.as_deref().map(units::no_expansions),
            args: spec.command.as_deref().map(units::no_expansions),
            working_dir: spec.workdir.clone(),
            env: self.env(fingerprint.as_deref()),
            ports: self.ports(),
            readiness_probe: self.probe(),
            resources: self.resources(),
            security_context: self.user(),
            volume_mounts: mounts,
        };
        // Init and main containers share one namespace of names.
        let init_name = match name.as_str() {
            "codex-copy" => "codex-copy-init",
            _ => "codex-copy",
        };
        let init = codex.as_ref().map(|c| Container {
            name: init_name.into(),
            image: spec.image.clone(),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                units::no_expansion(&c.script),
            ]),
            args: None,
            working_dir: None,
            env: Vec::new(),
            ports: Vec::new(),
            readiness_probe: None,
            resources: None,
            security_context: main.security_context.clone(),
            volume_mounts: vec![
                VolumeMount {
                    name: "codex-files".into(),
                    mount_path: CODEX_FILES.into(),
                    read_only: true,
                },
                VolumeMount {
                    name: "codex".into(),
                    mount_path: c.target.clone(),
                    read_only: false,
                },
            ],
        });
        if self
            .loaded
            .raw
            .update
            .as_ref()
            .is_some_and(|u| u.drain.is_some())
        {
            self.warn(
                &[Seg::Key("update"), Seg::Key("drain")],
                "update.drain: Kubernetes has no equivalent (a Service stops sending to a pod \
                 once it terminates): not rendered"
                    .into(),
            );
        }
        let selector = Map::from([
            (
                crate::labels::INSTANCE.to_string(),
                self.opts.instance.clone(),
            ),
            (crate::labels::LANE.to_string(), spec.lane.clone()),
        ]);
        let mut pod_labels = labels.clone();
        pod_labels.extend(self.user_labels(&mut annotations));
        let node_selector = spec
            .host
            .iter()
            .map(|h| ("kubernetes.io/hostname".to_string(), h.to_ascii_lowercase()))
            .collect();
        let deployment = Deployment {
            api_version: "apps/v1",
            kind: "Deployment",
            metadata: meta(&name, annotations.clone()),
            spec: DeploymentSpec {
                replicas: match spec.state {
                    DesiredState::Running => 1,
                    DesiredState::Stopped => 0,
                },
                selector: Selector {
                    match_labels: selector.clone(),
                },
                strategy: match spec.update.order {
                    UpdateOrder::StopFirst => Strategy {
                        kind: "Recreate",
                        rolling_update: None,
                    },
                    UpdateOrder::StartFirst => Strategy {
                        kind: "RollingUpdate",
                        rolling_update: Some(RollingUpdate {
                            max_surge: 1,
                            max_unavailable: 0,
                        }),
                    },
                },
                progress_deadline_seconds: spec
                    .probe
                    .as_ref()
                    .map(|p| units::seconds_up(p.timeout).max(1)),
                template: PodTemplate {
                    metadata: Meta {
                        name: String::new(),
                        namespace: None,
                        labels: pod_labels,
                        annotations,
                    },
                    spec: PodSpec {
                        node_selector,
                        termination_grace_period_seconds: units::seconds_up(spec.stop_timeout),
                        init_containers: init.into_iter().collect(),
                        containers: vec![main],
                        volumes,
                    },
                },
            },
        };
        let mut objects = Vec::new();
        if let Some(c) = codex {
            objects.push(Object::Secret(Secret {
                api_version: "v1",
                kind: "Secret",
                metadata: meta(
                    &c.secret,
                    Map::from([(crate::labels::CODEX_FINGERPRINT.into(), c.fingerprint)]),
                ),
                immutable: true,
                kind_of: "Opaque",
                data: c.data,
            }));
        }
        objects.push(Object::Deployment(Box::new(deployment)));
        if !spec.ports.is_empty() {
            objects.push(Object::Service(Service {
                api_version: "v1",
                kind: "Service",
                metadata: meta(&name, Map::new()),
                spec: ServiceSpec {
                    selector,
                    ports: spec
                        .ports
                        .iter()
                        .map(|p| ServicePort {
                            name: port_name(p.protocol, p.container),
                            port: p.container,
                            target_port: p.container,
                            protocol: protocol(p.protocol),
                        })
                        .collect(),
                },
            }));
        }
        Some(objects)
    }

    /// lanectl's labels, on every object.
    fn labels(&mut self) -> Option<Map> {
        let spec = self.spec;
        for (what, value) in [("instance", &self.opts.instance), ("lane name", &spec.lane)] {
            if !units::is_label_value(value) {
                self.error(
                    &[],
                    format!(
                        "the {what} {value:?} is not a Kubernetes label value (letters, digits, \
                         '-', '_', '.', starting and ending with a letter or digit)"
                    ),
                );
                return None;
            }
        }
        if let Some(host) = &spec.host
            && !units::is_label_value(host)
        {
            self.error(
                &[Seg::Key("host")],
                format!("host {host:?} is longer than a node label value (63): no node can be selected by it"),
            );
            return None;
        }
        Some(Map::from([
            (crate::labels::MANAGED_BY.to_string(), "lanectl".to_string()),
            (
                crate::labels::INSTANCE.to_string(),
                self.opts.instance.clone(),
            ),
            (crate::labels::LANE.to_string(), spec.lane.clone()),
        ]))
    }

    /// The lane's own labels: on the pods when Kubernetes takes them as
    /// labels, else as annotations (with a warning).
    fn user_labels(&mut self, annotations: &mut Map) -> Map {
        let mut out = Map::new();
        for (key, value) in &self.spec.labels {
            let shown = crate::yaml::shown_key(key);
            let (message, annotate) = match (units::is_label_key(key), units::is_label_value(value))
            {
                (true, true) => {
                    out.insert(key.clone(), value.clone());
                    continue;
                }
                // Annotation keys follow the label keys' rule: such a key
                // has no place on a Kubernetes object.
                (false, _) => (
                    format!(
                        "label {shown}: not a Kubernetes label or annotation key: not rendered"
                    ),
                    false,
                ),
                (true, false) => (
                    format!(
                        "label {shown}: its value is not a Kubernetes label value: rendered as a pod annotation"
                    ),
                    true,
                ),
            };
            let problem = self.loaded.key_problem(&[Seg::Key("labels")], key, message);
            self.warnings.push(problem);
            if annotate {
                annotations.insert(key.clone(), value.clone());
            }
        }
        out
    }

    /// The lane hash as `render` states it: the mounts at their node paths,
    /// without the local image ID and tracked content (so that renders agree
    /// across machines).
    fn hash(&self, fingerprint: Option<&str>) -> String {
        let mut spec = self.spec.clone();
        for m in &mut spec.mounts {
            m.source = PathBuf::from(self.node_path(m));
        }
        crate::hash::lane_hash(&spec, "", fingerprint, &[]).full
    }

    /// Where a mount's source is on a node: as written when absolute, else
    /// under the lanes directory's node path.
    fn node_path(&self, m: &Mount) -> String {
        if Path::new(&m.written).is_absolute() {
            return m.source.to_string_lossy().into_owned();
        }
        crate::lanespec::absolute(self.opts.node_dir.path(), &m.written)
            .to_string_lossy()
            .into_owned()
    }

    fn volumes(&mut self, codex: Option<&CodexSecret>) -> (Vec<Volume>, Vec<VolumeMount>) {
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        for (i, m) in self.spec.mounts.iter().enumerate() {
            let path = self.node_path(m);
            // The source here tells a file from a directory; one that is
            // only on the nodes is taken for a directory (most are), and
            // the warning says so.
            let (kind, guessed) = match self.inputs.mounts.get(i).copied().flatten() {
                Some(SourceHere::File) => ("File", ""),
                Some(SourceHere::Dir) => ("Directory", ""),
                None => ("Directory", "; not found here, so taken for a directory"),
            };
            let at = [Seg::Key("mounts"), Seg::Index(i)];
            if matches!(self.opts.node_dir, NodeDir::Here(_))
                && !Path::new(&m.written).is_absolute()
            {
                self.warn(
                    &[Seg::Key("mounts"), Seg::Index(i), Seg::Key("source")],
                    format!(
                        "mount source {} is relative: placed under this machine's path of the \
                         lanes directory, which another machine does not share; pass --node-dir \
                         (the lanes directory's path on the nodes) so that renders agree",
                        m.written
                    ),
                );
            }
            self.warn(
                &at,
                format!(
                    "bind mount of {}: node-local, rendered as hostPath {path} (type \
                     {kind}{guessed}), which must exist on the node",
                    m.written
                ),
            );
            if m.relabel == Relabel::Private {
                self.warn(
                    &[Seg::Key("mounts"), Seg::Index(i), Seg::Key("relabel")],
                    "relabel: private has no Kubernetes equivalent (the node labels its files): ignored"
                        .into(),
                );
            }
            let name = format!("mount-{i}");
            volumes.push(Volume {
                name: name.clone(),
                empty_dir: None,
                secret: None,
                host_path: Some(HostPath { path, kind }),
            });
            mounts.push(VolumeMount {
                name,
                mount_path: m.target.clone(),
                read_only: m.read_only,
            });
        }
        if let Some(c) = codex {
            volumes.push(Volume {
                name: "codex".into(),
                empty_dir: Some(EmptyDir {}),
                secret: None,
                host_path: None,
            });
            volumes.push(Volume {
                name: "codex-files".into(),
                empty_dir: None,
                secret: Some(SecretVolume {
                    secret_name: c.secret.clone(),
                }),
                host_path: None,
            });
            mounts.push(VolumeMount {
                name: "codex".into(),
                mount_path: c.target.clone(),
                read_only: false,
            });
        }
        (volumes, mounts)
    }

    fn env(&mut self, fingerprint: Option<&str>) -> Vec<EnvVar> {
        let mut env = self.spec.env.clone();
        if let (Some(codex), Some(fp)) = (&self.spec.codex, fingerprint)
            && let Some(name) = &codex.fingerprint_env
        {
            env.insert(name.clone(), fp.to_string());
        }
        for name in env.keys() {
            let shown = crate::yaml::shown_key(name);
            let problem = match units::env_name(name) {
                units::EnvName::Portable => continue,
                units::EnvName::Relaxed => self.loaded.key_problem(
                    &[Seg::Key("env")],
                    name,
                    format!(
                        "env {shown}: Kubernetes before 1.32 refuses this name (letters, digits, \
                         '_', '-', '.', not starting with a digit)"
                    ),
                ),
                units::EnvName::Refused => {
                    let problem = self.loaded.key_problem(
                        &[Seg::Key("env")],
                        name,
                        format!("env {shown}: Kubernetes refuses this name (printable ASCII only)"),
                    );
                    self.errors.push(problem);
                    continue;
                }
            };
            self.warnings.push(problem);
        }
        env.into_iter()
            .map(|(name, value)| EnvVar {
                name,
                value: units::no_expansion(&value),
            })
            .collect()
    }

    fn ports(&mut self) -> Vec<ContainerPort> {
        let mut out = Vec::new();
        for (i, p) in self.spec.ports.iter().enumerate() {
            let fixed = p.host_port != 0;
            if !fixed {
                self.warn(
                    &[Seg::Key("ports"), Seg::Index(i)],
                    format!(
                        "host_port 0: port {} is not published on the node; it is reachable \
                         through the Service {}",
                        p.container,
                        units::object_name(&self.spec.lane)
                    ),
                );
            }
            out.push(ContainerPort {
                name: port_name(p.protocol, p.container),
                container_port: p.container,
                protocol: protocol(p.protocol),
                host_ip: (fixed && p.host_ip != "0.0.0.0").then(|| p.host_ip.clone()),
                host_port: fixed.then_some(p.host_port),
            });
        }
        out
    }

    fn probe(&mut self) -> Option<ReadinessProbe> {
        let probe = self.spec.probe.as_ref()?;
        let written = self
            .loaded
            .raw
            .probe
            .as_ref()
            .is_some_and(|p| p.interval.is_some());
        if written && probe.interval.subsec_nanos() > 0 {
            let period = units::seconds_up(probe.interval).max(1);
            self.warn(
                &[Seg::Key("probe"), Seg::Key("interval")],
                format!(
                    "probe interval {}ms: Kubernetes probes in whole seconds: rendered as periodSeconds {period}",
                    probe.interval.as_millis()
                ),
            );
        }
        Some(ReadinessProbe {
            http_get: HttpGet {
                path: probe.path.clone(),
                port: probe.port,
            },
            period_seconds: units::seconds_up(probe.interval).max(1),
        })
    }

    fn resources(&mut self) -> Option<ResourceRequirements> {
        let r = &self.spec.resources;
        if r.pids.is_some() {
            self.warn(
                &[Seg::Key("resources"), Seg::Key("pids")],
                "resources.pids: Kubernetes limits processes per node (the kubelet's \
                 podPidsLimit), not per pod: not rendered"
                    .into(),
            );
        }
        let mut limits = Map::new();
        if let Some(bytes) = r.memory_bytes {
            limits.insert("memory".into(), units::memory(bytes));
        }
        if let Some(cpus) = r.cpus {
            limits.insert("cpu".into(), units::cpu(cpus));
        }
        (!limits.is_empty()).then(|| ResourceRequirements {
            requests: limits.clone(),
            limits,
        })
    }

    /// `user` as ids: `root` is 0, `uid[:gid]` as written; a user name is
    /// the image's to know, which Kubernetes does not ask.
    fn user(&mut self) -> Option<objects::SecurityContext> {
        let user = self.spec.user.as_deref()?;
        let id = |part: &str| match part {
            "root" => Some(0),
            _ => part.parse::<u32>().ok(),
        };
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (id(u), Some(id(g))),
            None => (id(user), None),
        };
        match (uid, gid) {
            (Some(uid), None) => Some(objects::SecurityContext {
                run_as_user: uid,
                run_as_group: None,
            }),
            (Some(uid), Some(Some(gid))) => Some(objects::SecurityContext {
                run_as_user: uid,
                run_as_group: Some(gid),
            }),
            _ => {
                self.warn(
                    &[Seg::Key("user")],
                    format!(
                        "user {user:?}: Kubernetes takes only numeric ids (and root): not \
                         rendered, the image's user runs"
                    ),
                );
                None
            }
        }
    }

    /// The codex as a Secret, read once (the files the fingerprint read).
    fn codex(&mut self, name: &str) -> Option<CodexSecret> {
        let Some(codex) = &self.spec.codex else {
            return None;
        };
        let at = [Seg::Key("codex"), Seg::Key("source")];
        let target_at = [Seg::Key("codex"), Seg::Key("target")];
        if crate::lanespec::overlaps(&codex.target, CODEX_FILES) {
            self.error(
                &target_at,
                format!(
                    "codex target {}: {CODEX_FILES} is where the init container finds the \
                     codex's files: choose another target",
                    codex.target
                ),
            );
            return None;
        }
        let files = match &self.inputs.codex {
            Some(Ok(files)) => files,
            Some(Err(e)) => {
                self.error(&at, e.clone());
                return None;
            }
            None => {
                self.error(&at, "the codex was not read: render again".into());
                return None;
            }
        };
        let total: usize = files.files.iter().map(|f| f.bytes.len()).sum();
        if total > SECRET_LIMIT {
            self.error(
                &at,
                format!(
                    "the codex holds {total} bytes, more than a Kubernetes Secret's 1 MiB \
                     ({SECRET_LIMIT} bytes): it cannot be rendered"
                ),
            );
            return None;
        }
        // Client-side `kubectl apply` keeps the whole object in an
        // annotation, and annotations hold 256 KiB at most.
        if total > CLIENT_SIDE_LIMIT {
            self.warn(
                &at,
                format!(
                    "the codex holds {total} bytes: its Secret is too large for a client-side \
                     `kubectl apply` (whose last-applied annotation holds 256 KiB); apply it \
                     with `kubectl apply --server-side`"
                ),
            );
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let target = codex.target.clone();
        let mut data = Map::new();
        let mut script = String::from("set -eu\n");
        let q = |p: &str| shell_words::quote(p).into_owned();
        // The target itself is the emptyDir, there already, and not the
        // lane user's to chmod: only what is below it is made here.
        let below: Vec<&Entry> = files.dirs.iter().filter(|d| !d.rel.is_empty()).collect();
        for dir in &below {
            script.push_str(&format!("mkdir -p {}\n", q(&join(&target, &dir.rel))));
        }
        for (i, f) in files.files.iter().enumerate() {
            let key = units::secret_key(i, &f.rel);
            let to = join(&target, &f.rel);
            script.push_str(&format!(
                "cp {} {}\nchmod {:o} {}\n",
                q(&format!("{CODEX_FILES}/{key}")),
                q(&to),
                f.mode,
                q(&to)
            ));
            data.insert(key, engine.encode(&f.bytes));
        }
        // Directories' modes last, deepest first: a read-only directory
        // made early could not take its files.
        for dir in below.iter().rev() {
            script.push_str(&format!(
                "chmod {:o} {}\n",
                dir.mode,
                q(&join(&target, &dir.rel))
            ));
        }
        let fingerprint = files.fingerprint.clone();
        Some(CodexSecret {
            secret: format!("{name}-codex-{}", &fingerprint[..10.min(fingerprint.len())]),
            target,
            fingerprint,
            data,
            script,
        })
    }
}

/// The codex as its Secret and the init container's copy script.
struct CodexSecret {
    secret: String,
    target: String,
    fingerprint: String,
    data: Map,
    script: String,
}

#[derive(Debug)]
struct CodexFiles {
    fingerprint: String,
    /// The target itself (`rel` empty) and every sub-directory, parents first.
    dirs: Vec<Entry>,
    files: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    rel: String,
    mode: u32,
    bytes: Vec<u8>,
}

/// The codex's files as the copy into a container takes them: its archive,
/// written by the fingerprint's own walk and read back.
fn codex_files(source: &Path, target: &str, policy: Policy) -> Result<CodexFiles, String> {
    let mut capped = Capped {
        buf: Vec::new(),
        over: false,
    };
    let archived = content::codex_archive(source, target, (0, 0), &mut capped, policy);
    if capped.over {
        return Err(format!(
            "the codex holds more than a Kubernetes Secret's 1 MiB ({SECRET_LIMIT} bytes) \
             by far: it cannot be rendered"
        ));
    }
    let fingerprint = archived.map_err(|e| {
        let (path, message) = e.into_parts();
        format!("{}: {message}", path.display())
    })?;
    let tar = capped.buf;
    let prefix = target
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the codex archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the codex archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("reading the codex archive: {e}"))?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let rel = match path.strip_prefix(&prefix) {
            Some(rest) => rest.trim_start_matches('/').to_string(),
            None => continue,
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mut bytes = Vec::new();
        if entry.header().entry_type().is_dir() {
            dirs.push(Entry { rel, mode, bytes });
        } else {
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading the codex archive: {e}"))?;
            files.push(Entry { rel, mode, bytes });
        }
    }
    Ok(CodexFiles {
        fingerprint,
        dirs,
        files,
    })
}

/// The codex's archive in memory, refused past [`Capped::CAP`]: a codex far
/// too large for a Secret is not read whole to learn so. (The exact count,
/// of the files' bytes, is made afterwards; an archive adds a header and
/// padding per file, hence the room.)
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl Capped {
    const CAP: usize = 16 * SECRET_LIMIT;
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > Self::CAP {
            self.over = true;
            return Err(std::io::Error::other("larger than a Secret can be"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `target` joined with a relative path (`""`: the target itself).
fn join(target: &str, rel: &str) -> String {
    match rel {
        "" => target.to_string(),
        _ => format!("{}/{rel}", target.trim_end_matches('/')),
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// A port's name (an IANA service name: at most 15, with a letter).
fn port_name(p: Protocol, port: u16) -> String {
    format!("{p}-{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Lane `a` of `yaml` (in `dir`, which holds any codex source),
    /// rendered with `inputs` as this machine's reading.
    fn render_in(
        dir: &Path,
        yaml: &str,
        inputs: Inputs,
        strict: bool,
    ) -> Result<Vec<Value>, Vec<String>> {
        let file = dir.join("a.yaml");
        let source = manifest::parse_source(&file, yaml.as_bytes().to_vec()).unwrap();
        let loaded = manifest::load(source, None).unwrap();
        let spec =
            crate::lanespec::resolve_for("a", &loaded, dir, crate::lanespec::MountsOn::Nodes)
                .unwrap_or_else(|p| panic!("{p:?}"));
        let opts = Options {
            instance: "inst".into(),
            namespace: Some("ns".into()),
            node_dir: NodeDir::Given(PathBuf::from("/srv/lanes.d")),
            strict,
        };
        lane(&spec, &loaded, &inputs, &opts)
            .map(|l| {
                l.objects
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap())
                    .collect()
            })
            .map_err(|p| p.iter().map(|p| p.message.clone()).collect())
    }

    fn render(yaml: &str) -> Vec<Value> {
        let inputs = Inputs {
            codex: None,
            mounts: Vec::new(),
        };
        render_in(Path::new("/l"), yaml, inputs, false).unwrap()
    }

    fn kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
        objects.iter().find(|o| o["kind"] == kind).unwrap()
    }

    #[test]
    fn state_and_update_order_map_to_replicas_and_strategy() {
        let d = render("image: i\n");
        let spec = &kind(&d, "Deployment")["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"], serde_json::json!({"type": "Recreate"}));
        let d = render(
            "image: i\nstate: stopped\nupdate: {order: start-first}\nports: [{container: 80}]\n",
        );
        let spec = &kind(&d, "Deployment")["spec"];
        assert_eq!(spec["replicas"], 0);
        assert_eq!(
            spec["strategy"],
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        );
        assert_eq!(d.len(), 2, "no codex: a Deployment and a Service");
        assert_eq!(kind(&d, "Service")["metadata"]["namespace"], "ns");
        assert_eq!(render("image: i\n").len(), 1, "no ports: no Service");
    }

    #[test]
    fn users_hosts_resources_and_times_map_to_kubernetes_terms() {
        let d = render(
            "image: i\nuser: \"1000:2000\"\nhost: Web-1\nresources: {memory: 512m, cpus: 1.5}\n\
             stop_timeout: 2500ms\nports: [{container: 80}]\nprobe: {timeout: 45s}\n",
        );
        let deployment = kind(&d, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["securityContext"],
            serde_json::json!({"runAsUser": 1000, "runAsGroup": 2000})
        );
        assert_eq!(pod["nodeSelector"]["kubernetes.io/hostname"], "web-1");
        assert_eq!(
            c["resources"]["limits"],
            serde_json::json!({"cpu": "1500m", "memory": "512Mi"})
        );
        assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
        assert_eq!(pod["terminationGracePeriodSeconds"], 3);
        assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 45);
        assert_eq!(c["readinessProbe"]["periodSeconds"], 1);
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            serde_json::json!({"path": "/", "port": 80})
        );
        let root = render("image: i\nuser: root\n");
        let c = &kind(&root, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["securityContext"], serde_json::json!({"runAsUser": 0}));
    }

    #[test]
    fn what_cannot_map_warns_and_strict_makes_it_an_error() {
        let yaml = "image: i\nuser: app\nresources: {pids: 10}\n";
        let inputs = || Inputs {
            codex: None,
            mounts: Vec::new(),
        };
        let d = render_in(Path::new("/l"), yaml, inputs(), false).unwrap();
        let c = &kind(&d, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        assert!(c.get("securityContext").is_none(), "{c}");
        let errors = render_in(Path::new("/l"), yaml, inputs(), true).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("user \"app\""), "{errors:?}");
        assert!(errors[1].starts_with("resources.pids"), "{errors:?}");
    }

    #[test]
    fn the_codex_is_a_secret_copied_by_a_script_that_quotes_and_keeps_modes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("codex")).unwrap();
        let entry = |rel: &str, mode: u32, bytes: &[u8]| Entry {
            rel: rel.into(),
            mode,
            bytes: bytes.to_vec(),
        };
        let inputs = Inputs {
            codex: Some(Ok(CodexFiles {
                fingerprint: "0123456789abcdef".into(),
                dirs: vec![entry("", 0o755, b""), entry("sub", 0o700, b"")],
                files: vec![
                    entry("run me", 0o755, b"#!/bin/sh\n"),
                    entry("sub/$x", 0o600, b"k"),
                ],
            })),
            mounts: Vec::new(),
        };
        let yaml =
            "image: i\nuser: \"1000\"\ncodex: {source: codex, target: /c, fingerprint_env: FP}\n";
        let d = render_in(dir.path(), yaml, inputs, false).unwrap();
        let secret = kind(&d, "Secret");
        assert_eq!(secret["metadata"]["name"], "a-codex-0123456789");
        assert_eq!(secret["immutable"], true);
        assert_eq!(secret["data"]["0000-run_me"], "IyEvYmluL3NoCg==");
        assert_eq!(secret["data"]["0001-_x"], "aw==");
        let pod = &kind(&d, "Deployment")["spec"]["template"]["spec"];
        let init = &pod["initContainers"][0];
        assert_eq!(init["securityContext"]["runAsUser"], 1000);
        // `$` doubled for Kubernetes; paths quoted for the shell; the target
        // itself (the emptyDir) never chmod-ed; directories last.
        assert_eq!(
            init["command"][2],
            "set -eu\nmkdir -p /c/sub\n\
             cp /.lanectl-codex-files/0000-run_me '/c/run me'\nchmod 755 '/c/run me'\n\
             cp /.lanectl-codex-files/0001-_x '/c/sub/$$x'\nchmod 600 '/c/sub/$$x'\n\
             chmod 700 /c/sub\n"
        );
        let main = &pod["containers"][0];
        assert_eq!(
            main["env"],
            serde_json::json!([{"name": "FP", "value": "0123456789abcdef"}])
        );
        assert_eq!(
            main["volumeMounts"],
            serde_json::json!([{"name": "codex", "mountPath": "/c"}])
        );
        assert_eq!(
            pod["volumes"][1]["secret"]["secretName"],
            "a-codex-0123456789"
        );
    }
}
