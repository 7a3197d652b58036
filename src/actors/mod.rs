//! The actors: a [`session::Session`] per socket, a [`room::Room`] per board found through the
//! [`registry::Registry`], and one [`presence::Presence`] for colors and join/leave transitions.

pub mod presence;
pub mod registry;
pub mod room;
pub mod session;
