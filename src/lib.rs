//! boardcast: a realtime board service. Browser tabs join board rooms over a WebSocket and see
//! each other's presence, cursors and typing, and every change to the board's items, live.
//!
//! # Layout
//!
//! The modules follow the data path of a frame:
//!
//! ```text
//! browser tab ──ws──► Session ──► Room (one per board per instance) ──► Broker ──► SQLite or Redis
//!                        ▲            │   ▲                                │
//!                        └── frames ──┘   └──────── board events ──────────┘
//!                                     Presence (colors, join/leave transitions)
//! ```
//!
//! - [`config`]: settings from the environment.
//! - [`startup`]: the [`startup::Application`]: actors, routes, the bound server.
//! - `http`: the WebSocket upgrade and its checks, health, dev tokens, assets.
//! - [`auth`]: tokens and the identity they give.
//! - [`protocol`]: client frames in, server frames out, error and close codes.
//! - `frames`: every frame a session is sent, but durable events (the backend builds those).
//! - `wire`: the encodings a socket may choose (JSON or MessagePack) and the negotiation.
//! - `actors`: the session, room, workspace (a tenant's sessions), registry, presence and the
//!   broker (the one actor that talks to the backend).
//! - `backend`: the shared world and its two backends side by side: `embedded` (a working set
//!   in memory, boards in SQLite) and `redis`; the presence model both follow. It knows nothing
//!   of the actors.
//! - [`board`]: the durable state of a board and its rules.
//! - [`event`]: what travels between actors (and instances).
//! - `limits`: rate limits and the cursor throttle.
//! - `metrics`: counters for `/metrics`.
//! - [`token`]: `boardcast token`, tokens signed with the configured key.
//! - `webhook`: board events as the app's backend receives them, signed.

#![warn(missing_docs)]

pub(crate) mod actors;
pub mod auth;
pub(crate) mod backend;
pub mod board;
pub mod config;
pub mod event;
pub(crate) mod frames;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod protocol;
pub mod startup;
pub mod token;
pub(crate) mod webhook;
pub(crate) mod wire;

/// `boardcast backup PATH`: a consistent copy of the embedded mode's database, taken while the
/// service runs.
pub use backend::embedded::sqlite::backup;
