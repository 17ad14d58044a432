//! End-to-end tests of the foundation: real server, real agents, real SSH, real SQLite, the
//! real `postern` binary — on loopback, in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod api;
mod cli;
mod cli_config;
mod cli_hostile;
mod enrollment;
mod gateway;
mod harness;
mod hostile_agent;
mod link;
mod openssh;
mod raw;
mod sessions;
mod ssh_end;
mod terminal;
