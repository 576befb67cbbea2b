//! `render kube [LANE...] [-o DIR]`: the lanes of every host as Kubernetes
//! objects (see `render`). Warnings and problems go to stderr as
//! `file:line:col: warning: …`; the YAML to stdout or into DIR. Needs no
//! Podman.

use std::path::Path;

use anyhow::Context;

use super::Exit;
use crate::cli::{Global, RenderTo};
use crate::content::Policy;
use crate::desired::{self, Desired, LoadOptions};
use crate::manifest::Problem;
use crate::render::{self, HEADER, Kustomization};

pub fn run(global: &Global, to: RenderTo) -> anyhow::Result<Exit> {
    let RenderTo::Kube {
        lanes: named,
        output,
        namespace,
        strict,
        allow_prune_all,
        node_dir,
    } = to;
    // Every host's lanes: on Kubernetes `host` is a node selector. Their
    // bind-mount sources are on the nodes, not necessarily here.
    let load = LoadOptions {
        host: None,
        mounts: crate::lanespec::MountsOn::Nodes,
        ..global.load_options()
    };
    let state = desired::load_dir(&global.dir, load)?;
    if let Some(unknown) = named.iter().find(|n| !state.lanes.contains_key(*n)) {
        anyhow::bail!("no lane {unknown} in {}", global.dir.display());
    }
    let names: Vec<&String> = state
        .lanes
        .keys()
        .filter(|n| named.is_empty() || named.contains(n))
        .collect();
    if names.is_empty() && !allow_prune_all {
        anyhow::bail!(
            "{} holds no lane to render: applied with pruning, an empty render deletes every \
             lane in the cluster; pass --allow-prune-all to render it anyway",
            global.dir.display()
        );
    }
    let mut failed = false;
    let instance = instance(global, strict, &mut failed)?;
    let opts = render::Options {
        instance,
        namespace: namespace.clone(),
        node_dir: match node_dir {
            Some(dir) => render::NodeDir::Given(dir),
            None => render::NodeDir::Here(
                std::fs::canonicalize(&global.dir)
                    .with_context(|| format!("cannot resolve {}", global.dir.display()))?,
            ),
        },
        strict,
    };
    let policy = Policy::of_process(global.allow_insecure_permissions);

    // Over every lane: a named lane may collide with one not named (whose
    // file `-o` keeps).
    let collisions = render::collisions(state.lanes.keys().map(String::as_str));
    // Each lane: its file name and YAML, or None (invalid: nothing rendered).
    let mut rendered: Vec<(String, Option<String>)> = Vec::new();
    for lane in names {
        let file = state.listing.lanes.get(lane).map(|f| f.path.clone());
        let file = file.unwrap_or_else(|| global.dir.join(format!("{lane}.yaml")));
        let object = crate::render::object_name(lane);
        let reserved = output.is_some() && object == "kustomization";
        let yaml = match (&state.lanes[lane], collisions.get(lane)) {
            _ if reserved => Err(vec![Problem::in_file(
                &file,
                "its file would be kustomization.yaml, which -o writes for the kustomization: \
                 rename the manifest",
            )]),
            (_, Some(messages)) => Err(messages
                .iter()
                .map(|m| Problem::in_file(&file, m.clone()))
                .collect()),
            (Desired::Invalid { problems, .. }, None) => Err(problems.clone()),
            (Desired::Valid { spec, .. }, None) => {
                let defaults = state.listing.defaults.as_deref();
                match render::load_manifest(&file, defaults) {
                    None => Err(vec![Problem::in_file(
                        &file,
                        "changed or went while being rendered: render again",
                    )]),
                    Some(loaded) => {
                        let inputs = render::read_inputs(spec, policy);
                        render::lane(spec, &loaded, &inputs, &opts).and_then(|r| {
                            for w in &r.warnings {
                                eprintln!("{}", w.labelled("warning"));
                            }
                            let name = file_name(&file);
                            r.yaml(lane, &name).map_err(|e| {
                                vec![Problem::in_file(&file, format!("cannot write YAML: {e}"))]
                            })
                        })
                    }
                }
            }
        };
        match yaml {
            Ok(yaml) => rendered.push((object, Some(yaml))),
            Err(problems) => {
                failed = true;
                for p in &problems {
                    eprintln!("{}", p.labelled("error"));
                }
                eprintln!("lane {lane}: not rendered");
                rendered.push((object, None));
            }
        }
    }

    match output {
        None => {
            for yaml in rendered.iter().filter_map(|(_, y)| y.as_ref()) {
                print!("{yaml}");
            }
        }
        Some(dir) => {
            // The lanes not named keep their files from before.
            let others: Vec<String> = state
                .lanes
                .keys()
                .filter(|n| !named.is_empty() && !named.contains(n))
                .map(|n| crate::render::object_name(n))
                .collect();
            write_dir(&dir, &rendered, &others, namespace)?
        }
    }
    Ok(Exit::failed_if(failed))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `--instance`, else the defaults' `instance:`, else the one derived from
/// this machine's path, which another machine would not derive: a warning
/// (an error under `--strict`), since renders should agree.
fn instance(global: &Global, strict: bool, failed: &mut bool) -> anyhow::Result<String> {
    let (instance, declared) = super::instance_declared(global)?;
    if !declared {
        let level = if strict { "error" } else { "warning" };
        eprintln!(
            "{}: {level}: no instance declared: using {instance}, derived from this machine's \
             path (another machine renders another); declare `instance:` in _defaults.yaml or \
             pass --instance, so that renders agree and `kubectl apply --prune -l \
             io.lanectl.instance=…` selects them",
            global.dir.display()
        );
        *failed |= strict;
    }
    Ok(instance)
}

/// Writes one file per lane and a kustomization.yaml listing them. An
/// invalid lane's file from before is kept (and listed), as is the file of
/// a lane not named (`others`): applied with pruning, a missing file would
/// delete the lane in the cluster. Files of lanes no longer rendered go,
/// only those this command wrote (the header says so); a file it did not
/// write is never overwritten: nothing is written then.
fn write_dir(
    dir: &Path,
    rendered: &[(String, Option<String>)],
    others: &[String],
    namespace: Option<String>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let targets = rendered
        .iter()
        .filter(|(_, yaml)| yaml.is_some())
        .map(|(name, _)| format!("{name}.yaml"))
        .chain(["kustomization.yaml".to_string()]);
    for file in targets {
        let path = dir.join(&file);
        if path.symlink_metadata().is_ok() && !ours(&path) {
            anyhow::bail!(
                "{}: not written by lanectl render (its first line is not `{HEADER}`): not \
                 overwriting it; render into another directory, or remove it",
                path.display()
            );
        }
    }
    let mut resources = Vec::new();
    for (name, yaml) in rendered {
        let file = format!("{name}.yaml");
        let path = dir.join(&file);
        match yaml {
            Some(yaml) => {
                write_atomic(&path, yaml)?;
                resources.push(file);
            }
            None if ours(&path) => resources.push(file),
            None => {}
        }
    }
    for name in others {
        let file = format!("{name}.yaml");
        if ours(&dir.join(&file)) {
            resources.push(file);
        }
    }
    // Two lanes colliding on one name may both keep one file.
    resources.sort();
    resources.dedup();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = file_name(&path);
        let stale = name.ends_with(".yaml")
            && name != "kustomization.yaml"
            && !resources.contains(&name)
            && ours(&path);
        if stale {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let kustomization = Kustomization {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        namespace,
        resources,
    };
    let yaml = crate::yaml::to_string(&kustomization).context("cannot write kustomization.yaml")?;
    write_atomic(
        &dir.join("kustomization.yaml"),
        &format!("{HEADER}\n{yaml}"),
    )
}

/// Whether `path` is a file this command wrote.
fn ours(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first).is_ok() && first.starts_with(HEADER)
}

/// Writes a rendered file whole or not at all, readable by its owner only:
/// a Secret in it holds the codex.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::atomic::write(path, ".lanectl-render.", text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}
