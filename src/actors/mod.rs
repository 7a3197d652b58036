//! The actors: a [`session::Session`] per socket, a [`room::Room`] per board found through the
//! [`registry::Registry`], one [`presence::Presence`] for colors and join/leave transitions,
//! a [`workspace::Workspace`] per tenant (tenant-wide presence and events), one
//! [`broker::Broker`], the only one that talks to the backend, and with `WEBHOOK_URL` the
//! [`webhook::Webhooks`] that post board events to the app's backend.

pub mod broker;
pub mod presence;
pub mod registry;
pub mod room;
pub mod session;
pub mod webhook;
pub mod workspace;
