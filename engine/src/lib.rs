//! Vergent: a leaderless, peer-to-peer key-value database.
//!
//! # Layout
//!
//! Dependencies run downwards; nothing below a layer knows the layer above it.
//!
//! ```text
//! cli                          the `vergent` command
//!  └─ client, node             talking to a node; the runtime that drives a node
//!      └─ protocol, net        wire messages and framing; QUIC + mutual TLS, certificate roles
//!          └─ coordinator, membership, antientropy   the deterministic mechanisms
//!              └─ placement    key → partition → replicas
//!                  └─ storage  LMDB tables, last-writer-wins apply, Merkle leaves, group commit
//!                      └─ record, hlc, limits   versions and records, hybrid logical clocks, bounds
//! ```
//!
//! - [`hlc`]: hybrid logical clocks; time is passed in.
//! - [`record`]: node ids, versions (`(hlc, node)`, totally ordered), records, their stored form.
//! - [`limits`]: key, value and frame bounds, with the errors that name them.
//! - [`placement`]: the partition of a key, and which members hold each partition.
//! - [`membership`]: SWIM through foca, the roster of members, status gossip.
//! - [`coordinator`]: the write/read coordinator (consistency levels, hints, read repair).
//! - [`antientropy`]: Merkle trees, the exchange that compares and repairs them, reports.
//! - [`storage`]: the LMDB store and its group-commit writer.
//! - [`protocol`]: request and response messages, length-prefixed frames.
//! - [`net`]: QUIC endpoints, rustls configuration, certificate roles.
//! - [`certs`]: the development certificate authority (`vergent certs`).
//! - [`node`]: a running node: the tasks that drive the mechanisms, moving their
//!   messages and their time (connections, membership, replication, hints, anti-entropy).
//! - [`client`]: a connection to a node.
//! - [`cli`]: the command line.

#![deny(missing_docs)]

pub mod antientropy;
pub mod certs;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod hlc;
pub mod limits;
pub mod membership;
pub mod net;
pub mod node;
pub mod placement;
pub mod protocol;
pub mod record;
pub mod storage;
pub mod wallclock;
