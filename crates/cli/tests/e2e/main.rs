//! End-to-end tests of the foundation: real server, real agents, real SSH, real SQLite, the
//! real `postern` binary — on loopback, in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod acme;
mod across_nodes;
mod admin;
mod agent_sshd;
mod api;
mod cli;
mod cli_config;
mod cli_hostile;
mod cluster;
mod cluster_events;
mod decisions;
mod document;
mod enrollment;
mod enrollment_limits;
mod fleet;
mod flood;
mod gateway;
mod gateway_limits;
mod harness;
mod hostile_agent;
mod http_limits;
mod https;
mod https_reload;
mod idle;
mod link;
mod link_proxy;
mod liveness;
mod logins;
mod metrics;
mod node_kill;
mod node_names;
mod nodes;
mod openssh;
mod packaging;
mod paramiko;
mod postgres;
mod processes;
mod raw;
mod server_process;
mod sessions;
mod shared_database;
mod slow_reader;
mod ssh_end;
mod stale_link;
mod storage;
mod survive;
mod terminal;
mod terminal_survive;
mod tls_support;
mod vanished_client;
