//! `down [LANE...]`: remove this instance's containers (default all) and
//! their status files. Containers of other instances are never touched.

use crate::cli::Global;
use crate::{lane, status};

pub async fn run(global: &Global, lanes: Vec<String>) -> anyhow::Result<super::Exit> {
    let ctx = super::context(global).await?;
    let observed = ctx.observe().await?;
    let mut names: Vec<String> = if lanes.is_empty() {
        let mut all: Vec<String> = observed.keys().filter(|k| !k.is_empty()).cloned().collect();
        if let Ok(listing) = lane::list_dir(&ctx.dir) {
            all.extend(listing.status_files);
        }
        all
    } else {
        lanes
    };
    names.sort();
    names.dedup();
    let mut failed = false;
    for name in &names {
        for c in observed.get(name).into_iter().flatten() {
            match ctx.podman.remove(&c.id).await {
                Ok(()) => println!("{name}  removed container {}", c.name),
                Err(e) => {
                    println!("{name}  failed: {e}");
                    failed = true;
                }
            }
        }
        if let Err(e) = status::remove(&ctx.dir, name) {
            println!("{name}  failed: {}", crate::error::chain(&e));
            failed = true;
        }
    }
    Ok(super::Exit::failed_if(failed))
}
