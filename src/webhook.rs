//! Webhooks: a board's events as the app's backend receives them, and the signed request that
//! carries them.
//!
//! Each event is kept as its JSON text, `{"type","payload","seq"?,"at"}` (`at` in milliseconds
//! since the epoch), from the moment it happens until a request carrying it is answered 2xx:
//! in the embedded mode in a queue per board, in Redis in a stream per board (written by the
//! same scripts that make the events). A request carries one board's events in order, at most
//! [`BATCH`]; the signature is HMAC-SHA256 over `"{t}.{body}"`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::event::{BoardKey, PresentUser};

/// Most events one request carries.
pub(crate) const BATCH: usize = 100;
/// A request not answered within this is a failure, retried.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry waits about this long; each next one twice as long...
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ...up to this.
const RETRY_LAST: Duration = Duration::from_secs(300);
/// How often due boards are looked for (Redis mode) and retries come due (both).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// `Boardcast-Signature: t={t},v1={hex}` for `body` sent at `t` (seconds since the epoch).
pub(crate) fn signature(secret: &[u8], t: u64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes a key of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The request body: `{"tenant","boardId","events":[...]}`, each event JSON text as it is.
pub(crate) fn body(board: &BoardKey, events: &[String]) -> String {
    let head = json!({"tenant": board.tenant, "boardId": board.board}).to_string();
    let mut out =
        String::with_capacity(head.len() + events.iter().map(String::len).sum::<usize>() + 16);
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(event);
    }
    out.push_str("]}");
    out
}

/// A durable event's entry: its frame `{"type","payload","seq"}` with `at` added.
pub(crate) fn durable_entry(frame: &str, at: u64) -> String {
    match frame.strip_suffix('}') {
        Some(open) => format!("{open},\"at\":{at}}}"),
        None => frame.to_string(),
    }
}

/// `presence.join` `{"userId","user","color"}`.
pub(crate) fn join_entry(user: &PresentUser, at: u64) -> String {
    json!({"type": "presence.join",
           "payload": {"userId": user.user_id, "user": user.user, "color": user.color},
           "at": at})
    .to_string()
}

/// `presence.leave` `{"userId"}`.
pub(crate) fn leave_entry(user_id: &str, at: u64) -> String {
    json!({"type": "presence.leave", "payload": {"userId": user_id}, "at": at}).to_string()
}

/// `board.resync`: events were lost before they could be delivered (the receiver fell behind
/// what is kept); the receiver reads the board instead.
pub(crate) fn resync_entry(at: u64) -> String {
    json!({"type": "board.resync",
           "payload": {"reason": "events were dropped before delivery; read the board"},
           "at": at})
    .to_string()
}

/// How long to wait after the `tries`-th failure in a row: doubling from a second up to five
/// minutes, the second half of each wait drawn at random (`random` in 0..1) so that boards
/// failing together do not retry together; never under a second.
pub(crate) fn retry_delay(tries: u32, random: f64) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1u32 << tries.saturating_sub(1).min(16));
    let wait = doubled.min(RETRY_LAST);
    (wait / 2 + wait.mul_f64(random.clamp(0.0, 1.0) / 2.0)).max(RETRY_FIRST)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends signed requests to the configured URL.
#[derive(Clone)]
pub(crate) struct Poster {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl Poster {
    /// A poster for `config`; what went wrong when no HTTP client can be built.
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Poster {
            client,
            url: config.url.clone(),
            secret: config.secret.clone(),
        })
    }

    /// Posts `body`; `Err` with what went wrong unless the answer is 2xx in time.
    pub(crate) async fn post(&self, body: String) -> Result<(), String> {
        let t = now_ms() / 1000;
        let signature = signature(&self.secret, t, &body);
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("boardcast-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body_in_hex() {
        // Computed independently: HMAC-SHA256 with key "k" over 1700000000.{"a":1}.
        assert_eq!(
            signature(b"k", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3"
        );
    }

    #[test]
    fn a_body_holds_the_board_and_its_events_in_order() {
        let board = BoardKey::new("acme", "b1");
        let events = vec![
            durable_entry(r#"{"type":"item.created","payload":{"x":1},"seq":1}"#, 5),
            leave_entry("ann", 6),
        ];
        let body: serde_json::Value = serde_json::from_str(&body(&board, &events)).expect("json");
        assert_eq!(
            body,
            json!({"tenant":"acme","boardId":"b1","events":[
                {"type":"item.created","payload":{"x":1},"seq":1,"at":5},
                {"type":"presence.leave","payload":{"userId":"ann"},"at":6},
            ]})
        );
    }

    #[test]
    fn retries_double_from_a_second_to_five_minutes_with_jitter() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(40, 1.0), Duration::from_secs(300));
        assert_eq!(retry_delay(40, 0.0), Duration::from_secs(150));
    }
}
