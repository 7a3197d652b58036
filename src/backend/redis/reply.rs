//! Reading Redis replies: text and numbers of any reply kind, hashes, log entries and
//! presence listings. Anything off the expected shape is an error, never a panic.

use super::*;

pub(super) fn text_of(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::VerbatimString { text, .. } => Some(text.clone()),
        RedisValue::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn status_text(v: &RedisValue) -> Option<String> {
    text_of(v)
}

pub(super) fn int(v: &RedisValue) -> Option<u64> {
    match v {
        RedisValue::Int(n) => u64::try_from(*n).ok(),
        other => text_of(other)?.parse().ok(),
    }
}

pub(super) fn array(v: RedisValue) -> Result<Vec<RedisValue>, BackendError> {
    match v {
        RedisValue::Array(items) | RedisValue::Set(items) => Ok(items),
        RedisValue::Nil => Ok(vec![]),
        other => Err(bad_data(format!("expected an array, got {other:?}"))),
    }
}

/// A flat `[k, v, k, v, ...]` array as pairs of text.
pub(super) fn pairs(v: RedisValue) -> Result<Vec<(String, String)>, BackendError> {
    if let RedisValue::Map(entries) = v {
        return entries
            .into_iter()
            .map(|(k, v)| {
                text_of(&k)
                    .zip(text_of(&v))
                    .ok_or_else(|| bad_data("a hash entry is not text"))
            })
            .collect();
    }
    let flat = array(v)?;
    flat.chunks(2)
        .map(|kv| match kv {
            [k, v] => text_of(k)
                .zip(text_of(v))
                .ok_or_else(|| bad_data("a hash entry is not text")),
            _ => Err(bad_data("an odd hash listing")),
        })
        .collect()
}

/// Log entries `[[id, [field, value, ...]], ...]` as (seq, frame, ack).
pub(super) fn log_entries(
    v: RedisValue,
) -> Result<Vec<(u64, ByteString, Option<AckTo>)>, BackendError> {
    let mut out = vec![];
    for entry in array(v)? {
        let mut parts = array(entry)?.into_iter();
        let id = parts.next().as_ref().and_then(text_of).unwrap_or_default();
        let seq = id
            .split('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad_data(format!("log entry id {id:?}")))?;
        let fields = pairs(parts.next().unwrap_or(RedisValue::Nil))?;
        let mut frame = None;
        let mut ack = None;
        for (k, v) in fields {
            match k.as_str() {
                "f" => frame = Some(ByteString::from(v)),
                "a" => ack = serde_json::from_str::<Option<AckTo>>(&v).ok().flatten(),
                _ => {}
            }
        }
        let frame = frame.ok_or_else(|| bad_data("a log entry without its frame"))?;
        out.push((seq, frame, ack));
    }
    Ok(out)
}

/// The presence listing `{rev, [user, info, color, status, order, ...]}`.
pub(super) fn listing(v: RedisValue) -> Result<(u64, Vec<PresentUser>), BackendError> {
    let mut parts = array(v)?.into_iter();
    let rev = parts.next().as_ref().and_then(int).unwrap_or(0);
    let flat = array(parts.next().unwrap_or(RedisValue::Nil))?;
    let mut users = vec![];
    for entry in flat.chunks(5) {
        let [user, info, color, status, order] = entry else {
            break;
        };
        let user_id = text_of(user).ok_or_else(|| bad_data("presence user"))?;
        let info: UserInfo = text_of(info)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let color = int(color)
            .and_then(|i| PALETTE.get(i as usize))
            .unwrap_or(&PALETTE[0]);
        let status = match text_of(status).as_deref() {
            Some("idle") => Status::Idle,
            _ => Status::Active,
        };
        let order = int(order).unwrap_or(0);
        users.push((
            order,
            PresentUser {
                user_id,
                user: info,
                color: color.to_string(),
                status,
            },
        ));
    }
    users.sort_by_key(|(order, _)| *order);
    Ok((rev, users.into_iter().map(|(_, u)| u).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> RedisValue {
        RedisValue::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn numbers_and_text_read_from_any_reply_kind() {
        assert_eq!(int(&RedisValue::Int(7)), Some(7));
        assert_eq!(int(&bulk("12")), Some(12));
        assert_eq!(int(&RedisValue::Int(-1)), None, "no negative counts");
        assert_eq!(int(&bulk("x")), None);
        assert_eq!(int(&RedisValue::Nil), None);
        assert_eq!(
            text_of(&RedisValue::SimpleString("OK".into())).as_deref(),
            Some("OK")
        );
        assert_eq!(
            text_of(&RedisValue::BulkString(vec![0xff])),
            None,
            "not UTF-8"
        );
    }

    #[test]
    fn hashes_read_as_flat_arrays_and_as_maps() {
        let flat = RedisValue::Array(vec![bulk("a"), bulk("1"), bulk("b"), RedisValue::Int(2)]);
        let map = RedisValue::Map(vec![
            (bulk("a"), bulk("1")),
            (bulk("b"), RedisValue::Int(2)),
        ]);
        let expected = vec![("a".to_string(), "1".to_string()), ("b".into(), "2".into())];
        assert_eq!(pairs(flat).ok(), Some(expected.clone()));
        assert_eq!(pairs(map).ok(), Some(expected));
        assert_eq!(pairs(RedisValue::Nil).ok(), Some(vec![]));
        assert!(pairs(RedisValue::Array(vec![bulk("a")])).is_err(), "odd");
        assert!(pairs(RedisValue::Array(vec![bulk("a"), RedisValue::Nil])).is_err());
        assert!(pairs(RedisValue::Int(3)).is_err());
    }

    #[test]
    fn log_entries_give_seq_frame_and_ack() {
        let ack = r#"{"session":5,"id":"c1","version":2}"#;
        let reply = RedisValue::Array(vec![
            RedisValue::Array(vec![
                bulk("7-1"),
                RedisValue::Array(vec![bulk("f"), bulk("{\"seq\":7}"), bulk("a"), bulk(ack)]),
            ]),
            RedisValue::Array(vec![
                bulk("8-1"),
                RedisValue::Array(vec![
                    bulk("f"),
                    bulk("{\"seq\":8}"),
                    bulk("a"),
                    bulk("null"),
                ]),
            ]),
        ]);
        let entries = log_entries(reply).expect("entries");
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].0, &*entries[0].1), (7, "{\"seq\":7}"));
        let to = entries[0].2.as_ref().expect("an ack");
        assert_eq!(
            (to.session, to.id.as_deref(), to.version),
            (SessionId(5), Some("c1"), Some(2))
        );
        assert!(entries[1].2.is_none());

        let bad_id = RedisValue::Array(vec![RedisValue::Array(vec![
            bulk("x-1"),
            RedisValue::Array(vec![bulk("f"), bulk("{}")]),
        ])]);
        assert!(log_entries(bad_id).is_err());
        let no_frame = RedisValue::Array(vec![RedisValue::Array(vec![
            bulk("3-1"),
            RedisValue::Array(vec![bulk("a"), bulk("null")]),
        ])]);
        assert!(log_entries(no_frame).is_err());
        assert!(log_entries(RedisValue::Int(1)).is_err());
    }

    #[test]
    fn a_presence_listing_is_in_arrival_order_with_palette_colors() {
        let reply = RedisValue::Array(vec![
            RedisValue::Int(9),
            RedisValue::Array(vec![
                bulk("bob"),
                bulk(r#"{"name":"Bob","avatar":null}"#),
                RedisValue::Int(1),
                bulk("idle"),
                RedisValue::Int(2),
                bulk("ann"),
                bulk("not json"),
                bulk("999"),
                bulk("active"),
                RedisValue::Int(1),
            ]),
        ]);
        let (rev, users) = listing(reply).expect("listing");
        assert_eq!(rev, 9);
        let ids: Vec<_> = users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["ann", "bob"]);
        assert_eq!(
            users[0].color, PALETTE[0],
            "an unknown color index falls back"
        );
        assert_eq!(
            users[0].user,
            UserInfo::default(),
            "unreadable info is empty"
        );
        assert_eq!(users[1].color, PALETTE[1]);
        assert_eq!(users[1].status, Status::Idle);
        assert_eq!(users[1].user.name.as_deref(), Some("Bob"));
        // A truncated entry ends the listing rather than shifting every field after it.
        let truncated = RedisValue::Array(vec![
            RedisValue::Int(1),
            RedisValue::Array(vec![bulk("ann"), bulk("{}")]),
        ]);
        assert_eq!(listing(truncated).map(|(_, u)| u.len()).ok(), Some(0));
    }

    #[test]
    fn board_messages_skip_this_instances_own_and_what_does_not_decode() {
        let left = |rev: u64| format!(r#"{{"Left":{{"rev":{rev},"user_id":"ann"}}}}"#);
        let message = |origin: &str| format!("{origin}\n{}", left(3)).into_bytes();
        let gone = |rev| BoardEvent::Left {
            rev,
            user_id: "ann".into(),
        };
        assert_eq!(decode_board_message("me", &message("-")), vec![gone(3)]);
        assert_eq!(decode_board_message("me", &message("me")), vec![]);
        assert_eq!(decode_board_message("me", b"-\n{\"Left\":{}}"), vec![]);
        assert_eq!(decode_board_message("me", b"no newline"), vec![]);
        assert_eq!(decode_board_message("me", &[0xff, b'\n']), vec![]);
        let batch = format!("you\n{}\n{{\"Left\":{{}}}}\n{}", left(4), left(5));
        assert_eq!(
            decode_board_message("me", batch.as_bytes()),
            vec![gone(4), gone(5)]
        );
    }
}
