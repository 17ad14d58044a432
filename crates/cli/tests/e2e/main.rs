//! End-to-end tests of the foundation: real server, real agents, real SSH, real SQLite, the
//! real `postern` binary — on loopback, in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod api;
mod cli;
mod document;
mod enrollment;
mod gateway;
mod harness;
mod link;
mod openssh;
mod raw;
mod sessions;
mod terminal;
