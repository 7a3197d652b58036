//! Property-driven fuzzing of everything a peer's bytes reach first: client frames, board
//! operations and tokens. Whatever the input, the answer is a value or a clear error, never a
//! panic, and what comes back stays in proportion to what went in. Bounded in cases, so it runs
//! in the test suite in a few seconds.

use boardcast::auth::Verifier;
use boardcast::board::{BoardLimits, BoardState};
use boardcast::config::JwtKey;
use boardcast::protocol::{parse_client_frame, ClientMessage};
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &[u8] = b"fuzz-secret-0123456789";

/// JSON values of any shape, nested a few levels, with the keys the protocol reads.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "payload",
        "id",
        "item",
        "itemId",
        "columnId",
        "value",
        "changes",
        "groupId",
        "position",
        "expectedVersion",
        "x",
        "y",
        "status",
        "token",
        "version",
        "z",
        "sub",
        "exp",
        "nbf",
        "tenant",
        "role",
        "boards",
        "aud",
        "name",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z.|{}:]{0,12}".prop_map(Value::from),
        (4_000_000_000u64..5_000_000_000).prop_map(Value::from),
        prop::sample::select(vec![
            "cursor.move",
            "typing.start",
            "typing.stop",
            "presence.update",
            "ping",
            "auth.refresh",
            "item.created",
            "item.updated",
            "item.moved",
            "item.deleted",
            "value.set",
            "idle",
            "active",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_decodes_to_a_frame_or_a_bounded_error(text in ".{0,300}") {
        if let Err(err) = parse_client_frame(&text) {
            let frame = err.to_frame();
            prop_assert!(frame.len() < 1024 + text.len(), "{}", frame.len());
        }
    }

    #[test]
    fn any_json_decodes_to_a_frame_or_a_bounded_error(value in arb_json()) {
        let text = value.to_string();
        match parse_client_frame(&text) {
            Ok(frame) => {
                if let Some(id) = &frame.id {
                    prop_assert!(id.chars().count() <= 64);
                }
                if let ClientMessage::CursorMove(Some(p)) = frame.message {
                    prop_assert!(p.x.is_finite() && p.y.is_finite());
                }
            }
            Err(err) => {
                let frame = err.to_frame();
                prop_assert!(frame.len() < 1024 + text.len(), "{}", frame.len());
            }
        }
    }

    #[test]
    fn any_sequence_of_operations_keeps_the_board_within_its_bounds(
        payloads in prop::collection::vec(arb_json(), 1..40),
        kinds in prop::collection::vec(
            prop::sample::select(vec!["item.created", "item.updated", "item.moved", "item.deleted", "value.set"]),
            40,
        ),
    ) {
        let limits = BoardLimits {
            max_items: 5,
            max_item_bytes: 300,
            max_board_bytes: 1000,
            replay_events: 10,
            replay_bytes: 10_000,
        };
        let mut board = BoardState::default();
        for (payload, kind) in payloads.into_iter().zip(kinds) {
            let Value::Object(map) = payload else { continue };
            let Ok(Some(op)) = boardcast::board::DurableOp::decode(kind, map) else { continue };
            let _ = board.apply(op, "u", limits);
            prop_assert!(board.bytes() <= limits.max_board_bytes);
            prop_assert!(board.items().len() <= limits.max_items);
        }
    }

    #[test]
    fn any_token_text_verifies_or_is_refused(text in "[A-Za-z0-9_.=-]{0,400}") {
        let verifier = Verifier::new(&JwtKey::Secret(SECRET.to_vec())).expect("key");
        prop_assert!(verifier.verify(&text).is_err());
    }

    #[test]
    fn any_signed_claims_verify_or_are_refused(claims in arb_json()) {
        let verifier = Verifier::new(&JwtKey::Secret(SECRET.to_vec())).expect("key");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("signing works");
        if let Ok(identity) = verifier.verify(&token) {
            prop_assert!(!identity.user_id.is_empty());
            prop_assert!(boardcast::auth::valid_tenant(&identity.tenant));
        }
    }
}
