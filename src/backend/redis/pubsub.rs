//! Board and user channels: what is published on them, and how a board message reads.

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
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.board_channel(board), format!("{origin}\n{json}"))
            .await
            .map_err(unavailable)
    }

    /// Publishes a frame on a user's channel.
    pub async fn publish_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: &str,
    ) -> Result<(), BackendError> {
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.user_channel(tenant, user_id), frame)
            .await
            .map_err(unavailable)
    }
}

/// Decodes a board channel message: `None` for this instance's own ephemeral events.
pub fn decode_board_message(instance: &str, payload: &[u8]) -> Option<BoardEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let (origin, json) = text.split_once('\n')?;
    if origin == instance {
        return None;
    }
    match serde_json::from_str(json) {
        Ok(event) => Some(event),
        Err(e) => {
            log::warn!("ignoring a board message that does not decode: {e}");
            None
        }
    }
}
