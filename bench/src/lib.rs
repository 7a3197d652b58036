//! Load generation for boardcast and its reference peers, speaking only the wire contract.
//!
//! # Layout
//!
//! - [`stats`]: latency recording and percentiles.
//! - [`procfs`]: CPU time and resident memory of a process, from `/proc`.
//! - [`client`]: tokens, connections (spread over loopback source addresses) and frame parsing.
//! - [`lean`]: the lean WebSocket client `cursors` sends and receives with.
//! - [`scenarios`]: `idle`, `cursors`, `durable` and `churn`, a file each, each bounded in count
//!   and time.
//! - [`reconnect`]: the users of a dead instance reconnecting at once to another.
//! - [`report`]: the Markdown report of a run's JSON lines.
//!
//! Every target is a loopback URL; every loop stops by itself.

#![warn(missing_docs)]

pub mod client;
pub mod lean;
pub mod procfs;
pub mod reconnect;
pub mod report;
pub mod scenarios;
pub mod stats;
