//! lanectl's integration tests: the real binary against a real Podman (see
//! `common.rs` for the fixtures, and scripts/test for how Podman is provided).

// Test code: a failed step is a failed test, and its panic says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod cli;
mod converge;
mod daemon;
mod diskfull;
mod errors;
mod events;
mod failures;
mod faults;
mod hardening;
mod hosts;
mod metrics;
mod plan;
mod progress;
mod promises;
mod readme;
mod render;
mod rollout;
mod secrets;
mod systemd;
mod validate;
mod wait;
mod watch;
