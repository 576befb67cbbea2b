//! lanectl's integration tests: the real binary against a real Podman (see
//! `common.rs` for the fixtures, and scripts/test for how Podman is provided).

mod common;

mod cli;
mod converge;
mod daemon;
mod diskfull;
mod events;
mod failures;
mod faults;
mod hardening;
mod plan;
mod promises;
mod secrets;
mod validate;
mod watch;
