//! lanectl: keeps worker containers ("lanes") in the state that a directory of
//! YAML manifests declares, through the Podman REST API.
//!
//! The library holds everything; the `lanectl` binary (`main.rs`) only parses
//! the command line, starts logging and maps what a command returns to an
//! exit code. Tests and the benchmark use the same `status`, `probe` and
//! `hash` code as the binary.
//!
//! The modules follow a lane from file to endpoint (the README's design notes
//! walk it): the pure core (`lane`, `yaml`, `manifest`, `spec`, `desired`,
//! `digest`, `content`, `hash`, `labels`, `plan`, `status`) never does Podman or async
//! I/O; the adapter (`podman`, `observe`) converts Podman's models into the
//! core's types; `exec` is the only module that changes Podman; `reconcile`
//! chains the steps for one lane and one pass; the daemon (`daemon`, `queue`,
//! `sources`) schedules lanes; `cli` and `cmd` are the face.

pub mod atomic;
pub mod backoff;
pub mod cli;
pub mod cmd;
pub mod container;
pub mod content;
pub mod daemon;
pub mod desired;
pub mod digest;
pub mod error;
pub mod exec;
#[cfg(test)]
mod fitness_tests;
#[cfg(test)]
mod fuzz_tests;
pub mod hash;
pub mod hostports;
pub mod labels;
pub mod lane;
pub mod lanespec;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod podman;
pub mod probe;
pub mod provenance;
pub mod queue;
pub mod reconcile;
pub mod render;
pub mod sources;
pub mod status;
pub mod systemd;
pub mod yaml;
