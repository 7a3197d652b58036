//! The behavioural test suite: the real server (in process on port 0, or the real binary),
//! real WebSocket clients and a real `redis-server` per test that needs one. One binary, so
//! the support code and the crate are compiled and linked once.

#[macro_use]
mod support;

mod cluster;
mod connect;
mod durable;
mod encoding;
mod ephemeral;
mod fuzz;
mod http_api;
mod limits;
mod presence;
mod security;
mod shutdown;
mod token;
mod webhooks;
mod workspace;
