//! Shared test support, by job: the server in process ([`app`]), tokens ([`tokens`]), a
//! WebSocket client that waits with timeouts ([`client`]), the real binary as a child process
//! ([`instances`]), a `redis-server` of a test's own ([`redis_server`]) or a Redis Cluster
//! ([`redis_cluster`]), and a webhook [`receiver`].
#![allow(dead_code)]

use std::time::Duration;

pub mod app;
pub mod client;
pub mod instances;
pub mod receiver;
pub mod redis_cluster;
pub mod redis_server;
pub mod tokens;

pub use app::*;
pub use client::*;
pub use instances::*;
pub use receiver::*;
pub use redis_cluster::*;
pub use redis_server::*;
pub use tokens::*;

/// The HS256 secret every test server uses.
pub const SECRET: &[u8] = b"test-secret-0123456789abcdef";
/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs one test body in both modes, `name::embedded` and `name::redis`, and once more with
/// clients that speak MessagePack, `name::msgpack` (embedded). `backends_only` leaves that run
/// out, for tests that choose their clients' encodings themselves or test JSON text as such.
macro_rules! in_both_modes {
    (async fn $name:ident($mode:ident) $body:block) => {
        in_both_modes! { @modes $name $mode $body
            #[actix_web::test]
            async fn msgpack() {
                body(Mode::MsgPack).await
            }
        }
    };
    (backends_only async fn $name:ident($mode:ident) $body:block) => {
        in_both_modes! { @modes $name $mode $body }
    };
    (@modes $name:ident $mode:ident $body:block $($more:item)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($mode: Mode) $body

            #[actix_web::test]
            async fn embedded() {
                body(Mode::Embedded).await
            }

            #[actix_web::test]
            async fn redis() {
                body(Mode::Redis).await
            }

            $($more)*
        }
    };
}
