//! The connection to Redis: one server through a connection manager, or a Redis Cluster
//! through the cluster client, behind one type so that the backend's code is the same for
//! both. What differs is named here: how a channel is heard (`SUBSCRIBE` or, on a cluster,
//! sharded `SSUBSCRIBE` on the node that owns the channel's slot) and published to.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A multiplexed connection to one Redis or to a cluster; cheap to clone.
#[derive(Clone)]
pub enum Conn {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster: commands go to the node owning their keys' slot.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Whether Redis answers: on a cluster, every master, so that a master that died is
    /// noticed (until its replica has taken over) whichever slots the instance uses.
    pub(crate) async fn ping(&mut self) -> bool {
        let ping = redis::cmd("PING");
        match self {
            Conn::Single(conn) => ping.query_async::<String>(conn).await.is_ok(),
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                };
                let every_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.route_command(ping, every_master).await.is_ok()
            }
        }
    }

    /// Starts hearing a channel (sharded on a cluster).
    pub(crate) async fn listen(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    /// Stops hearing a channel.
    pub(crate) async fn unlisten(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channel).await,
            Conn::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// The command that publishes on a channel: sharded on a cluster, so that a board's messages
/// stay on the node that owns its keys.
pub(crate) fn publish_command(cluster: bool) -> &'static str {
    if cluster {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}
