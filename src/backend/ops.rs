//! Idempotent durable operations: what was answered to each `(user, id)`, so that a retry
//! (after `unavailable`, a timeout or a lost connection) gets the first answer again instead of
//! applying twice.
//!
//! A retry is the same operation: each record keeps a digest of the operation, and the same id
//! with another operation is a new operation (clients that number their ids from 1 on every
//! connection keep working). Records last [`RETENTION`] and a board keeps at most
//! [`MAX_RECORDS`]; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::board::Refusal;

/// How long an answer is remembered for retries.
pub const RETENTION: Duration = Duration::from_secs(600);
/// Answers remembered per board at most.
pub const MAX_RECORDS: usize = 10_000;

/// Who sent an operation under which id; the operation's digest tells a retry from a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpKey {
    /// The record's name: the user and the id, length-prefixed so that no two pairs collide.
    pub field: String,
    /// A digest of the operation (type and payload).
    pub digest: String,
}

impl OpKey {
    /// The key of the operation `kind` with `payload` sent by `user` under `id`.
    pub fn new(user: &str, id: &str, kind: &str, payload: &Value) -> OpKey {
        let mut hash = Sha256::new();
        hash.update(kind.as_bytes());
        hash.update(b"\n");
        // serde_json's maps are ordered by key, so equal payloads give equal text. The text goes
        // into the digest as it is written, without a copy.
        // A JSON value into a writer that takes every byte cannot fail.
        let _ = serde_json::to_writer(HashWriter(&mut hash), payload);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digest = String::with_capacity(32);
        for b in hash.finalize().iter().take(16) {
            digest.push(char::from(HEX[usize::from(b >> 4)]));
            digest.push(char::from(HEX[usize::from(b & 15)]));
        }
        OpKey {
            field: format!("{}:{user}:{id}", user.len()),
            digest,
        }
    }
}

/// Feeds what serde_json writes into a digest.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answer an operation got: its seq and version, or its refusal.
pub type Outcome = Result<(u64, Option<u64>), Refusal>;

/// An outcome as stored (in Redis), JSON: `{"seq","version"}` or `{"code","message","current"}`
/// with the protocol's error code.
pub fn outcome_text(outcome: &Outcome) -> String {
    let refused = |code: &str, message: &str, current: Option<&Value>| {
        json!({"code": code, "message": message, "current": current}).to_string()
    };
    match outcome {
        Ok((seq, version)) => json!({"seq": seq, "version": version}).to_string(),
        Err(Refusal::NotFound(message)) => refused("not_found", message, None),
        Err(Refusal::TooLarge(message)) => refused("too_large", message, None),
        Err(Refusal::Conflict { message, current }) => refused("conflict", message, Some(current)),
    }
}

/// An outcome read back; `None` when the text is not one.
pub fn parse_outcome(text: &str) -> Option<Outcome> {
    let value: Value = serde_json::from_str(text).ok()?;
    if let Some(seq) = value.get("seq").and_then(Value::as_u64) {
        return Some(Ok((seq, value.get("version").and_then(Value::as_u64))));
    }
    let message = value.get("message")?.as_str()?.to_string();
    let refusal = match value.get("code")?.as_str()? {
        "not_found" => Refusal::NotFound(message),
        "too_large" => Refusal::TooLarge(message),
        "conflict" => Refusal::Conflict {
            message,
            current: value.get("current").cloned().unwrap_or(Value::Null),
        },
        _ => return None,
    };
    Some(Err(refusal))
}

/// One remembered answer.
#[derive(Debug)]
struct Record {
    /// The operation's digest.
    digest: String,
    /// What it was answered.
    outcome: Outcome,
    /// When, for expiry.
    at: Instant,
}

/// The answers of one board's recent operations, in memory.
#[derive(Debug, Default)]
pub struct OpLog {
    /// Answers by record name.
    records: HashMap<String, Record>,
    /// Record names oldest first, with the time they were written (a name written again
    /// appears twice; only its latest entry counts).
    order: VecDeque<(String, Instant)>,
}

impl OpLog {
    /// The first answer to this operation, if it was answered within the retention.
    pub fn answered(&mut self, key: &OpKey, now: Instant) -> Option<Outcome> {
        self.expire(now);
        let record = self.records.get(&key.field)?;
        (record.digest == key.digest).then(|| record.outcome.clone())
    }

    /// Remembers the answer to an operation.
    pub fn remember(&mut self, key: &OpKey, outcome: Outcome, now: Instant) {
        self.records.insert(
            key.field.clone(),
            Record {
                digest: key.digest.clone(),
                outcome,
                at: now,
            },
        );
        self.order.push_back((key.field.clone(), now));
        while self.records.len() > MAX_RECORDS {
            self.drop_oldest();
        }
        // Entries of names written again are dropped when they come to the front.
        while self.order.len() > 2 * MAX_RECORDS {
            self.drop_oldest();
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > RETENTION)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let Some((field, at)) = self.order.pop_front() else {
            return;
        };
        if self.records.get(&field).is_some_and(|r| r.at == at) {
            self.records.remove(&field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, id: &str, value: i64) -> OpKey {
        OpKey::new(user, id, "value.set", &json!({"itemId":"i","value":value}))
    }

    #[test]
    fn the_digest_is_the_first_half_of_the_sha256_of_type_and_payload_text() {
        // Digests are stored (SQLite, Redis): a retry after an upgrade must find the same one.
        let payload = json!({"value": {"a": [1, "x"]}, "itemId": "i", "columnId": "c"});
        let key = OpKey::new("ann", "7", "value.set", &payload);
        assert_eq!(key.digest, "f9e6c9e848a3cb51b391adbcc2de6c31");
        assert_eq!(key.field, "3:ann:7");
    }

    #[test]
    fn a_retry_gets_the_first_answer_and_another_op_under_the_same_id_does_not() {
        let mut log = OpLog::default();
        let now = Instant::now();
        log.remember(&key("ann", "1", 5), Ok((7, Some(2))), now);
        assert_eq!(
            log.answered(&key("ann", "1", 5), now),
            Some(Ok((7, Some(2))))
        );
        assert_eq!(log.answered(&key("ann", "1", 6), now), None, "another op");
        assert_eq!(log.answered(&key("bob", "1", 5), now), None, "another user");
        let later = now + RETENTION + Duration::from_secs(1);
        assert_eq!(log.answered(&key("ann", "1", 5), later), None, "expired");
    }

    #[test]
    fn record_names_do_not_collide_across_users_and_ids() {
        assert_ne!(key("a:1", "2", 0).field, key("a", "1:2", 0).field);
    }

    #[test]
    fn refusals_are_remembered_and_read_back() {
        for refusal in [
            Refusal::Conflict {
                message: "stale".into(),
                current: json!({"id":"i","version":3}),
            },
            Refusal::NotFound("no item i".into()),
            Refusal::TooLarge("the board is full".into()),
        ] {
            let outcome: Outcome = Err(refusal);
            let text = outcome_text(&outcome);
            assert_eq!(parse_outcome(&text), Some(outcome), "{text}");
        }
        assert_eq!(
            parse_outcome(&outcome_text(&Ok((3, None)))),
            Some(Ok((3, None)))
        );
        assert_eq!(parse_outcome("nonsense"), None);
    }

    #[test]
    fn a_board_remembers_a_bounded_number_of_answers() {
        let mut log = OpLog::default();
        let now = Instant::now();
        for n in 0..(MAX_RECORDS + 10) {
            log.remember(&key("u", &n.to_string(), 0), Ok((n as u64, None)), now);
        }
        assert_eq!(log.records.len(), MAX_RECORDS);
        assert_eq!(
            log.answered(&key("u", "0", 0), now),
            None,
            "the oldest went first"
        );
    }
}
