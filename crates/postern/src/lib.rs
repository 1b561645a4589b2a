//! postern daemon library: configuration, the SMTP session, the spool,
//! the scheduler, delivery transports, and the command-line faces.
//!
//! Crate map (see docs/ARCHITECTURE.md): `postern-wire` is the I/O-free
//! protocol core; this crate is everything with I/O and policy.

pub mod aliases;
pub mod auth;
pub mod bounce;
pub mod ca;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod counters;
pub mod delivery;
pub mod directory;
pub mod dn;
pub mod idna;
pub mod import;
pub mod inbound;
pub mod loadgen;
pub mod locate;
pub mod mailauth;
pub mod maildrop;
pub mod maillog;
pub mod metrics;
pub mod milter;
pub mod monitor;
pub mod policy;
pub mod preflight;
pub mod private_file;
pub mod queue;
pub mod server;
pub mod services;
pub mod session;
pub mod settings;
pub mod spool;
pub mod state;
pub mod time;
pub mod tls;
pub mod users;
