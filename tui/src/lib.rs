//! The Vergent dashboard (`vergent top`): a live view of a cluster as one node sees it.
//!
//! - [`model`]: what the screen shows, as plain data; the `vergent` command builds it
//!   from a node's status. This crate knows nothing of networking.
//! - [`app`]: focus, selection, pause and overlays; keys change them.
//! - [`ui`]: rendering (`impl Widget for &App`), from 80×24 upward.
//! - [`style`]: every colour in one place; symbols carry the meaning without colour.
//! - [`terminal`]: the loop that reads keys, takes new views and redraws.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod model;
pub mod style;
pub mod terminal;
pub mod ui;

#[cfg(test)]
mod tests;
