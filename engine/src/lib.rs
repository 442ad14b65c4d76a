//! Vergent: a leaderless, peer-to-peer key-value database.
//!
//! # Layout
//!
//! Dependencies run downwards; nothing below a layer knows the layer above it (a unit
//! test, `layering`, reads every `crate::` path and refuses an edge this map does not
//! allow).
//!
//! ```text
//! cli                          the `vergent` command
//!  └─ node                     the runtime that drives a node's core
//!      └─ client               talking to a node
//!          └─ wallclock        the system clock, read by the runtime only
//!              └─ net, core    QUIC + mutual TLS, certificate roles; the node core, one
//!                  │           deterministic state machine the runtime and the simulator drive
//!                  └─ protocol, certs, policy   wire messages and framing; the development CA;
//!                     │                 the rules for hints, handoff and purges
//!                      └─ membership    SWIM, the roster, status gossip
//!                          └─ coordinator, antientropy   the deterministic mechanisms
//!                              └─ storage   LMDB tables, last-writer-wins apply, group commit
//!                                  └─ tree, paxos   the Merkle tree's shape and digests; per-key Paxos
//!                                      └─ record    versions and records
//!                                          └─ base, hlc, limits, placement, types
//! ```
//!
//! - [`base`]: monotonic milliseconds, consistency levels, certificate roles.
//! - [`tree`]: the shape of a partition's Merkle tree and its digest arithmetic.
//! - [`hlc`]: hybrid logical clocks; time is passed in.
//! - [`types`]: the typed values a bucket can hold (counter, set, siblings), as CRDTs.
//! - [`paxos`]: single-decree Paxos per key (linearizable buckets): acceptor rules, quorums.
//! - [`buckets`]: buckets and their types, the catalog every node holds, bucket keys.
//! - [`record`]: node ids, versions (`(hlc, node)`, totally ordered), records, their stored form.
//! - [`limits`]: key, value and frame bounds, with the errors that name them.
//! - [`placement`]: the partition of a key, and which members hold each partition.
//! - [`membership`]: SWIM through foca, the roster of members, status gossip.
//! - [`policy`]: which hints to deliver or drop, when to hand a partition off, what to purge.
//! - [`coordinator`]: the write/read coordinator (consistency levels, hints, read repair).
//! - [`antientropy`]: the exchange that compares and repairs them, reports.
//! - [`storage`]: the LMDB store and its group-commit writer.
//! - [`protocol`]: request and response messages, length-prefixed frames.
//! - [`net`]: QUIC endpoints, rustls configuration, certificate roles.
//! - [`certs`]: the development certificate authority (`vergent certs`).
//! - [`core`]: the node core: every mechanism of a node and the logic that ties them
//!   together, as one state machine fed inputs and drained of outputs.
//! - [`node`]: a running node: the tasks that drive the mechanisms, moving their
//!   messages and their time (connections, membership, replication, hints, anti-entropy).
//! - [`client`]: a connection to a node.
//! - [`cli`]: the command line.

#![deny(missing_docs)]

pub mod antientropy;
pub mod base;
pub mod buckets;
pub mod certs;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod core;
pub mod hlc;
pub mod limits;
pub mod membership;
pub mod net;
pub mod node;
pub mod paxos;
pub mod placement;
pub mod policy;
pub mod protocol;
pub mod record;
pub mod storage;
pub mod tree;
pub mod types;
pub mod wallclock;

#[cfg(test)]
mod layering;
