//! End-to-end tests of the foundation: real server, real agents, real SSH, real SQLite, the
//! real `postern` binary — on loopback, in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod agent_sshd;
mod api;
mod cli;
mod decisions;
mod cli_config;
mod cli_hostile;
mod document;
mod enrollment;
mod enrollment_limits;
mod flood;
mod gateway;
mod gateway_limits;
mod harness;
mod http_limits;
mod hostile_agent;
mod link;
mod logins;
mod liveness;
mod openssh;
mod paramiko;
mod processes;
mod raw;
mod sessions;
mod storage;
mod ssh_end;
mod terminal;
