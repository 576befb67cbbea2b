//! `status`: the lanes' status files as a table or a JSON array. Needs no Podman.

use comfy_table::{Table, presets};

use crate::cli::Global;
use crate::lane;
use crate::status::{self, Phase, Status};

/// The message of a lane that has no (readable) status file.
const NO_STATUS: &str = "no status file yet: run lanectl apply (or lanectl run)";

pub fn run(global: &Global, named: &[String], json: bool) -> anyhow::Result<super::Exit> {
    let listing = lane::list_dir(&global.dir)?;
    // Only this host's lanes: another host's have their status there.
    let here = global.host();
    let policy = crate::content::Policy::of_process(global.allow_insecure_permissions);
    let elsewhere = crate::desired::elsewhere(&global.dir, &listing, &here, policy);
    let mut names: Vec<String> = listing.lanes.keys().cloned().collect();
    names.extend(listing.status_files);
    names.sort();
    names.dedup();
    names.retain(|n| !elsewhere.contains_key(n));
    if let Some(unknown) = named.iter().find(|n| !names.contains(n)) {
        match elsewhere.get(unknown) {
            Some(host) => eprintln!("lane {unknown} runs on host {host}, not on {here}"),
            None => eprintln!("no lane {unknown}: neither a manifest nor a status file"),
        }
        return Ok(super::Exit::Failed);
    }
    if !named.is_empty() {
        names.retain(|n| named.contains(n));
    }
    // A lane without a readable status file is shown, in both forms, as
    // `pending` (not converged yet) with a message saying so: one of the
    // SPEC's phases, never a phase of our own, and no `since` it never had.
    let statuses: Vec<Status> = names
        .iter()
        .map(|name| {
            status::read(&global.dir, name).unwrap_or_else(|| Status {
                message: NO_STATUS.into(),
                since: String::new(),
                ..Status::new(name, Phase::Pending)
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(super::Exit::Ok);
    }
    // Named lanes in full, history included, as their status files say.
    if !named.is_empty() {
        for (i, s) in statuses.iter().enumerate() {
            if i > 0 {
                println!("---");
            }
            print!("{}", crate::yaml::to_string(s)?);
        }
        return Ok(super::Exit::Ok);
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    // The commit a lane's container was made at, short, when any has one.
    let commits = statuses.iter().any(|s| s.git_commit.is_some());
    let mut header = vec!["LANE", "PHASE", "ENDPOINT", "CONTAINER"];
    if commits {
        header.push("COMMIT");
    }
    header.extend(["RESTARTS", "SINCE", "MESSAGE"]);
    table.set_header(header);
    for s in &statuses {
        let mut row = vec![
            s.lane.clone(),
            s.phase.to_string(),
            s.endpoint.clone().unwrap_or_default(),
            s.container.clone().unwrap_or_default(),
        ];
        if commits {
            let commit = s.git_commit.as_deref().map(crate::provenance::short);
            row.push(commit.unwrap_or_default().to_string());
        }
        row.extend([s.restarts.to_string(), s.since.clone(), s.message.clone()]);
        table.add_row(row);
    }
    println!("{table}");
    Ok(super::Exit::Ok)
}
