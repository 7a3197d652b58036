//! Board channels: what is published on them, and how a board message reads.

use super::*;

impl RedisBackend {
    /// Publishes an event on a board's channel. `from_here` marks events this instance has
    /// delivered to its own sessions already; other instances still deliver them.
    pub async fn publish(
        &self,
        board: &BoardKey,
        event: &BoardEvent,
        from_here: bool,
    ) -> Result<(), BackendError> {
        let origin = if from_here {
            self.instance.as_str()
        } else {
            "-"
        };
        let json = serde_json::to_string(event).map_err(bad_data)?;
        self.publish_command(&self.board_channel(board), &format!("{origin}\n{json}"))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// The command that publishes `payload` on `channel`: sharded on a cluster.
    fn publish_command(&self, channel: &str, payload: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(conn::publish_command(self.cluster));
        cmd.arg(channel).arg(payload);
        cmd
    }

    /// Publishes ephemeral events in one round trip, in order. Each board's events from one
    /// origin that follow each other on the board go out as one message, an event a line, so
    /// a burst on a board costs Redis and every subscribed instance one message. An event that
    /// does not serialize is skipped.
    pub(crate) async fn publish_batch(&self, batch: &[Outgoing]) -> Result<(), BackendError> {
        struct Message<'a> {
            board: &'a BoardKey,
            from_here: bool,
            payload: String,
        }
        let mut messages: Vec<Message> = Vec::new();
        // Each board's latest message in `messages`.
        let mut latest: HashMap<&BoardKey, usize> = HashMap::new();
        for out in batch {
            let json = match serde_json::to_string(&out.event) {
                Ok(json) => json,
                Err(e) => {
                    log::warn!("an event was not published: {e}");
                    continue;
                }
            };
            match latest.get(&out.board).map(|&i| &mut messages[i]) {
                Some(message) if message.from_here == out.from_here => {
                    message.payload.push('\n');
                    message.payload.push_str(&json);
                }
                _ => {
                    let origin = if out.from_here {
                        self.instance.as_str()
                    } else {
                        "-"
                    };
                    latest.insert(&out.board, messages.len());
                    messages.push(Message {
                        board: &out.board,
                        from_here: out.from_here,
                        payload: format!("{origin}\n{json}"),
                    });
                }
            }
        }
        if self.cluster {
            // A cluster takes a pipeline within one slot only: each message goes on its own,
            // all at once, each over the connection to its channel's node.
            let sends = messages.iter().map(|message| async move {
                self.publish_command(&self.board_channel(message.board), &message.payload)
                    .query_async::<()>(&mut self.conn())
                    .await
            });
            for sent in futures_util::future::join_all(sends).await {
                sent.map_err(unavailable)?;
            }
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for message in &messages {
            pipe.add_command(
                self.publish_command(&self.board_channel(message.board), &message.payload),
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}

/// An ephemeral event waiting to be published on its board's channel.
pub(crate) struct Outgoing {
    pub(crate) board: BoardKey,
    pub(crate) event: BoardEvent,
    /// This instance delivered it to its own sessions already; other instances still do.
    pub(crate) from_here: bool,
}

/// Decodes a board channel message (an origin line, then an event a line): nothing for this
/// instance's own ephemeral events; a line that does not decode is skipped.
pub fn decode_board_message(instance: &str, payload: &[u8]) -> Vec<BoardEvent> {
    let Some((origin, events)) = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.split_once('\n'))
    else {
        return Vec::new();
    };
    if origin == instance {
        return Vec::new();
    }
    events
        .split('\n')
        .filter_map(|json| match serde_json::from_str(json) {
            Ok(event) => Some(event),
            Err(e) => {
                log::warn!("ignoring a board message that does not decode: {e}");
                None
            }
        })
        .collect()
}
