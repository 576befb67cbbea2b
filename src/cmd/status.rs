//! `status`: the lanes' status files as a table or a JSON array. Needs no Podman.

use comfy_table::{Table, presets};

use crate::cli::Global;
use crate::lane;
use crate::status::{self, Status};

pub fn run(global: &Global, json: bool) -> anyhow::Result<super::Exit> {
    let listing = lane::list_dir(&global.dir)?;
    let mut names: Vec<String> = listing.lanes.keys().cloned().collect();
    names.extend(listing.status_files);
    names.sort();
    names.dedup();
    let statuses: Vec<Status> = names
        .iter()
        .filter_map(|name| status::read(&global.dir, name))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(super::Exit::Ok);
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header([
        "LANE",
        "PHASE",
        "ENDPOINT",
        "CONTAINER",
        "RESTARTS",
        "SINCE",
        "MESSAGE",
    ]);
    for s in &statuses {
        table.add_row([
            s.lane.clone(),
            s.phase.to_string(),
            s.endpoint.clone().unwrap_or_default(),
            s.container.clone().unwrap_or_default(),
            s.restarts.to_string(),
            s.since.clone(),
            s.message.clone(),
        ]);
    }
    for name in names
        .iter()
        .filter(|n| !statuses.iter().any(|s| &s.lane == *n))
    {
        table.add_row([
            name.clone(),
            "unknown".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            "no status yet: run lanectl apply".into(),
        ]);
    }
    println!("{table}");
    Ok(super::Exit::Ok)
}
