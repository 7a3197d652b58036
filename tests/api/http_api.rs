//! Section 8 of the protocol: the HTTP API for backends.

use crate::support::*;
use serde_json::json;

in_both_modes! {
async fn a_backend_creates_an_item_that_sessions_see_as_the_server(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    let (status, body) = app
        .post(
            "/api/boards/b/events",
            Some(&server_token()),
            &json!({"type":"item.created","payload":{"item":{"id":"i"}}}),
        )
        .await;
    assert_eq!((status, body), (202, json!({"seq":1})));
    assert_eq!(
        ann.next_sequenced().await,
        json!({"type":"item.created","payload":{"item":{"id":"i","version":1},"userId":"server"},"seq":1})
    );
}
}

in_both_modes! {
async fn backend_conflicts_and_unknown_items_get_409_and_404(mode) {
    let app = spawn_app_in(mode).await;
    let t = server_token();
    app.post(
        "/api/boards/b/events",
        Some(&t),
        &json!({"type":"item.created","payload":{"item":{"id":"i"}}}),
    )
    .await;
    let (status, body) = app
        .post("/api/boards/b/events", Some(&t), &json!({"type":"item.updated","payload":{"itemId":"i","changes":{},"expectedVersion":5}}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["current"], json!({"id":"i","version":1}));
    let (status, body) = app
        .post(
            "/api/boards/b/events",
            Some(&t),
            &json!({"type":"item.deleted","payload":{"itemId":"nope"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}
}

in_both_modes! {
async fn custom_events_are_sequenced_unless_ephemeral(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    let t = server_token();
    let (status, body) = app
        .post(
            "/api/boards/b/events",
            Some(&t),
            &json!({"type":"order.shipped","payload":{"n":1}}),
        )
        .await;
    assert_eq!((status, body), (202, json!({"seq":1})));
    assert_eq!(
        ann.next_frame().await,
        json!({"type":"order.shipped","payload":{"n":1,"userId":"server"},"seq":1})
    );
    let (status, body) = app
        .post(
            "/api/boards/b/events",
            Some(&t),
            &json!({"type":"order.progress","payload":{"p":50},"ephemeral":true}),
        )
        .await;
    assert_eq!((status, body), (202, json!({})));
    assert_eq!(
        ann.next_frame().await,
        json!({"type":"order.progress","payload":{"p":50,"userId":"server"}})
    );
    // Sequenced custom events are replayed on resume.
    let mut bob = app.resume("b", "bob", 0).await;
    assert_eq!(bob.next_frame().await["payload"]["toSeq"], 1);
    assert_eq!(bob.next_frame().await["type"], "order.shipped");
}
}

in_both_modes! {
async fn reserved_and_malformed_types_are_400(mode) {
    let app = spawn_app_in(mode).await;
    let t = server_token();
    for kind in [
        "presence.join",
        "cursor.move",
        "typing.start",
        "board.snapshot",
        "auth.refresh",
        "ack",
        "Bad.Type",
        "nodot",
        "item.bogus",
    ] {
        let (status, body) = app
            .post(
                "/api/boards/b/events",
                Some(&t),
                &json!({"type": kind, "payload": {}}),
            )
            .await;
        assert_eq!(status, 400, "{kind}");
        assert_eq!(body["error"]["code"], "bad_request", "{kind}");
    }
    let (status, _) = app
        .post(
            "/api/boards/bad.board/events",
            Some(&t),
            &json!({"type":"a.b"}),
        )
        .await;
    assert_eq!(status, 400);
}
}

in_both_modes! {
async fn the_api_needs_a_server_token(mode) {
    let app = spawn_app_in(mode).await;
    let editor = token("ann");
    let posts = [
        ("/api/boards/b/events", json!({"type":"a.b","payload":{}})),
        ("/api/users/ann/events", json!({"type":"a.b","payload":{}})),
        ("/api/boards/b/kick", json!({"userId":"ann"})),
    ];
    for (path, body) in &posts {
        let (status, reply) = app.post(path, None, body).await;
        assert_eq!(
            (status, reply["error"]["code"].clone()),
            (401, json!("unauthorized")),
            "{path}"
        );
        let (status, reply) = app.post(path, Some(&editor), body).await;
        assert_eq!(
            (status, reply["error"]["code"].clone()),
            (403, json!("forbidden")),
            "{path}"
        );
    }
    assert_eq!(app.get("/api/boards/b/presence", None).await.0, 401);
    assert_eq!(
        app.get("/api/boards/b/presence", Some(&editor)).await.0,
        403
    );
}
}

in_both_modes! {
async fn a_body_over_the_limit_is_413(mode) {
    let mut config = test_config();
    config.max_message_bytes = 1000;
    let app = spawn_app_with_in(mode, config).await;
    let body = json!({"type":"a.b","payload":{"x":"y".repeat(2000)}});
    let (status, reply) = app
        .post("/api/boards/b/events", Some(&server_token()), &body)
        .await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (413, json!("too_large"))
    );
}
}

in_both_modes! {
async fn a_user_event_reaches_every_tab_of_the_user_on_every_board(mode) {
    let app = spawn_app_in(mode).await;
    let (mut on_b1, _) = app.join("b1", "ann").await;
    let (mut on_b2, _) = app.join("b2", "ann").await;
    let mut elsewhere = claims("ann");
    elsewhere.tenant = Some("other".into());
    let (mut other_tenant, _) = app.join_with("b1", &sign(&elsewhere)).await;
    let (status, _) = app
        .post(
            "/api/users/ann/events",
            Some(&server_token()),
            &json!({"type":"notice.sent","payload":{"m":"hi"}}),
        )
        .await;
    assert_eq!(status, 202);
    let expected = json!({"type":"notice.sent","payload":{"m":"hi"}});
    assert_eq!(on_b1.next_frame().await, expected);
    assert_eq!(on_b2.next_frame().await, expected);
    // The same user id in another tenant hears nothing: its next frame answers its ping.
    other_tenant.send_type("ping", json!({})).await;
    assert_eq!(other_tenant.next_frame().await["type"], "pong");
    // A tab that closes stops hearing; the user's other tab still does.
    let (mut watcher, _) = app.join("b1", "bob").await;
    on_b1.leave().await;
    watcher.next_of("presence.leave").await;
    let (status, _) = app
        .post(
            "/api/users/ann/events",
            Some(&server_token()),
            &json!({"type":"notice.sent","payload":{"m":"again"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        on_b2.next_frame().await,
        json!({"type":"notice.sent","payload":{"m":"again"}})
    );
}
}

in_both_modes! {
async fn presence_is_listed_for_backends(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    let (mut bob, _) = app.join("b", "bob").await;
    ann.next_of("presence.join").await;
    bob.send_type("cursor.move", json!({"position":{"x":1,"y":2}}))
        .await;
    ann.next_of("cursor.move").await;
    let (status, body) = app
        .get("/api/boards/b/presence", Some(&server_token()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"users":[
            {"userId":"ann","user":{"name":"ann name","avatar":null},"color":"#e6194b","cursor":null,"status":"active"},
            {"userId":"bob","user":{"name":"bob name","avatar":null},"color":"#3cb44b","cursor":{"x":1,"y":2},"status":"active"}
        ]})
    );
    let (_, empty) = app
        .get("/api/boards/empty/presence", Some(&server_token()))
        .await;
    assert_eq!(empty, json!({"users":[]}));
}
}

in_both_modes! {
async fn a_kick_closes_the_users_sessions_with_4003_and_announces_the_leave(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, _) = app.join("b", "bob").await;
    let (mut t1, _) = app.join("b", "ann").await;
    let (mut t2, _) = app.join("b", "ann").await;
    bob.next_of("presence.join").await;
    let (status, _) = app
        .post(
            "/api/boards/b/kick",
            Some(&server_token()),
            &json!({"userId":"ann"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(t1.expect_close().await, 4003);
    assert_eq!(t2.expect_close().await, 4003);
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
}
}

in_both_modes! {
async fn metrics_are_prometheus_text(mode) {
    let app = spawn_app_in(mode).await;
    let (_ann, _) = app.join("b", "ann").await;
    let response = reqwest::get(app.url("/metrics")).await.expect("get");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(text.contains("# TYPE boardcast_sessions gauge"), "{text}");
    assert!(text.contains("boardcast_rooms 1"), "{text}");
}
}

in_both_modes! {
async fn a_backend_reads_the_board_its_sessions_built(mode) {
    let app = spawn_app_in(mode).await;
    let t = server_token();
    let (status, empty) = app.get("/api/boards/b", Some(&t)).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(
        (&empty["boardId"], &empty["seq"], &empty["items"], &empty["values"]),
        (&json!("b"), &json!(0), &json!([]), &json!([])),
        "an unknown board is empty at seq 0"
    );
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i","title":"T","w":2.5}}), "1")
        .await;
    ann.request("value.set", json!({"itemId":"i","columnId":"c","value":{"k":[1,2]}}), "2")
        .await;
    let (_bob, snapshot) = app.join("b", "bob").await;
    let (status, body) = app.get("/api/boards/b", Some(&t)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seq"], 2);
    assert_eq!(body["items"], snapshot["payload"]["items"], "what a snapshot holds");
    assert_eq!(body["values"], snapshot["payload"]["values"]);
    assert_eq!(body["epoch"], snapshot["payload"]["epoch"]);
    // Only with a server token, and only in its tenant.
    assert_eq!(app.get("/api/boards/b", Some(&token("ann"))).await.0, 403);
    assert_eq!(app.get("/api/boards/b", None).await.0, 401);
    let mut other = claims("backend");
    other.role = boardcast::auth::Role::Server;
    other.tenant = Some("acme".into());
    let (status, theirs) = app.get("/api/boards/b", Some(&sign(&other))).await;
    assert_eq!((status, &theirs["seq"], &theirs["items"]), (200, &json!(0), &json!([])));
}
}

in_both_modes! {
async fn a_backend_pages_through_the_retained_events(mode) {
    let app = spawn_app_in(mode).await;
    let t = server_token();
    let (mut ann, _) = app.join("b", "ann").await;
    for n in 1..=5 {
        let answer = ann
            .request("item.created", json!({"item":{"id":format!("i{n}")}}), &n.to_string())
            .await;
        assert_eq!(answer["type"], "ack", "{answer}");
    }
    let page = |after: u64, limit: u64| format!("/api/boards/b/events?after={after}&limit={limit}");
    let (status, first) = app.get(&page(0, 2), Some(&t)).await;
    assert_eq!(status, 200, "{first}");
    let seqs = |body: &serde_json::Value| -> Vec<u64> {
        body["events"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["seq"].as_u64()).collect())
            .unwrap_or_default()
    };
    assert_eq!((seqs(&first), &first["seq"]), (vec![1, 2], &json!(5)));
    assert_eq!(
        first["events"][0],
        json!({"type":"item.created","payload":{"item":{"id":"i1","version":1},"userId":"ann"},"seq":1})
    );
    assert_eq!(seqs(&app.get(&page(2, 2), Some(&t)).await.1), vec![3, 4]);
    assert_eq!(seqs(&app.get(&page(4, 2), Some(&t)).await.1), vec![5]);
    assert_eq!(seqs(&app.get(&page(5, 2), Some(&t)).await.1), Vec::<u64>::new());
    let (_, all) = app.get("/api/boards/b/events", Some(&t)).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5], "after 0, limit 100 by default");
    // Off-contract queries, an epoch of another life of the board, and a seq ahead of it.
    for bad in ["?after=x", "?limit=0", "?limit=1001", "?after=-1", "?epoch=not-alnum!"] {
        let (status, body) = app.get(&format!("/api/boards/b/events{bad}"), Some(&t)).await;
        assert_eq!((status, &body["error"]["code"]), (400, &json!("bad_request")), "{bad}");
    }
    let epoch = all["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(app.get(&format!("/api/boards/b/events?after=1&epoch={epoch}"), Some(&t)).await.0, 200);
    let (status, body) = app.get("/api/boards/b/events?after=1&epoch=0123456789abcdef", Some(&t)).await;
    assert_eq!((status, &body["error"]["code"]), (410, &json!("gone")), "{body}");
    assert_eq!(app.get(&page(9, 2), Some(&t)).await.0, 410);
}
}

in_both_modes! {
async fn events_no_longer_retained_are_410(mode) {
    let mut config = test_config();
    config.replay_events = 3;
    let app = spawn_app_with_in(mode, config).await;
    let t = server_token();
    let (mut ann, _) = app.join("b", "ann").await;
    for n in 1..=6 {
        ann.request("item.created", json!({"item":{"id":format!("i{n}")}}), &n.to_string())
            .await;
    }
    let (status, body) = app.get("/api/boards/b/events?after=0", Some(&t)).await;
    assert_eq!((status, &body["error"]["code"]), (410, &json!("gone")), "{body}");
    let (status, body) = app.get("/api/boards/b/events?after=3", Some(&t)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(3));
}
}
