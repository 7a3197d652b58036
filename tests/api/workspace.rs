//! The workspace: who is online in a tenant (`workspace=1` frames, `GET /api/presence`) and
//! events for every session of a tenant (`POST /api/events`).

use std::time::Instant;

use crate::support::*;
use boardcast::auth::Role;
use serde_json::{json, Value};

/// A token for `sub` in `tenant`.
fn tenant_token(sub: &str, tenant: &str) -> String {
    let mut c = claims(sub);
    c.tenant = Some(tenant.into());
    sign(&c)
}

/// A server token for `tenant`.
fn tenant_server_token(tenant: &str) -> String {
    let mut c = claims("backend");
    c.tenant = Some(tenant.into());
    c.role = Role::Server;
    sign(&c)
}

/// Connects with `workspace=1` and reads the first frame.
async fn join_workspace(app: &TestApp, board: &str, token: &str) -> (TestClient, Value) {
    let mut client = app
        .connect(&format!("{}&workspace=1", app.ws_url(board, token)))
        .await;
    let first = client.next_frame().await;
    (client, first)
}

/// The next `workspace.*` frame, skipping what the client's board sends.
async fn next_workspace(client: &mut TestClient) -> Value {
    loop {
        let frame = client.next_frame().await;
        if frame["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("workspace."))
        {
            return frame;
        }
    }
}

fn user(id: &str) -> Value {
    json!({"userId": id, "user": {"name": format!("{id} name"), "avatar": null}})
}

/// `GET /api/presence` with `token`, until `done` holds for its users.
async fn presence_until(app: &TestApp, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app.get("/api/presence", Some(token)).await;
        assert_eq!(status, 200, "{body}");
        if done(&body["users"]) {
            return body["users"].clone();
        }
        assert!(Instant::now() < deadline, "presence stayed {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

in_both_modes! {
async fn the_workspace_tells_first_and_last_sessions_of_a_tenant_only(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b1", "ann").await;
    let (mut watcher, first) = join_workspace(&app, "b2", &token("watcher")).await;
    assert_eq!(first["type"], "board.snapshot", "the board's first frame comes first");
    assert_eq!(
        watcher.next_frame().await,
        json!({"type":"workspace.snapshot","payload":{"users":[user("ann"), user("watcher")]}})
    );

    let (mut bob1, _) = app.join("b1", "bob").await;
    assert_eq!(
        next_workspace(&mut watcher).await,
        json!({"type":"workspace.online","payload":user("bob")})
    );
    // bob's second tab, and ann moving from b1 to b2: nobody came or went.
    let (mut bob2, _) = app.join("b2", "bob").await;
    let (_ann2, _) = app.join("b2", "ann").await;
    ann.leave().await;
    bob1.leave().await;
    // The next transition is cid's arrival, then bob's last tab closing.
    let (_cid, _) = app.join("b3", "cid").await;
    assert_eq!(next_workspace(&mut watcher).await["payload"], user("cid"));
    bob2.leave().await;
    assert_eq!(
        next_workspace(&mut watcher).await,
        json!({"type":"workspace.offline","payload":user("bob")})
    );
    // A session that did not ask gets no workspace frames: eve's arrival reached the watcher,
    // and what dan gets next is the answer to his ping.
    let (mut dan, _) = app.join("b1", "dan").await;
    assert_eq!(next_workspace(&mut watcher).await["payload"], user("dan"));
    let (_eve, _) = app.join("b4", "eve").await;
    assert_eq!(next_workspace(&mut watcher).await["payload"], user("eve"));
    dan.send_type("ping", json!({})).await;
    dan.next_of("pong").await;
}
}

in_both_modes! {
async fn a_watcher_coming_after_others_is_told_who_is_online_then_each_change(mode) {
    let app = spawn_app_in(mode).await;
    // Nobody watches the tenant while these come and go.
    let (mut ann, _) = app.join("b1", "ann").await;
    let (mut bob, _) = app.join("b2", "bob").await;
    let (_cid, _) = app.join("b1", "cid").await;
    bob.leave().await;
    presence_until(&app, &server_token(), |u| {
        u.as_array().is_some_and(|u| u.len() == 2)
    })
    .await;
    let (mut watcher, _) = join_workspace(&app, "b3", &token("watcher")).await;
    assert_eq!(
        next_workspace(&mut watcher).await,
        json!({"type":"workspace.snapshot","payload":{"users":[user("ann"), user("cid"), user("watcher")]}})
    );
    let (_dan, _) = app.join("b2", "dan").await;
    assert_eq!(
        next_workspace(&mut watcher).await,
        json!({"type":"workspace.online","payload":user("dan")})
    );
    ann.leave().await;
    assert_eq!(
        next_workspace(&mut watcher).await,
        json!({"type":"workspace.offline","payload":user("ann")})
    );
    // The next watcher, after the first left, is told the same view.
    watcher.leave().await;
    presence_until(&app, &server_token(), |u| {
        u.as_array().is_some_and(|u| u.len() == 2)
    })
    .await;
    let (mut second, _) = join_workspace(&app, "b1", &token("eve")).await;
    assert_eq!(
        next_workspace(&mut second).await,
        json!({"type":"workspace.snapshot","payload":{"users":[user("cid"), user("dan"), user("eve")]}})
    );
}
}

in_both_modes! {
async fn workspaces_of_two_tenants_never_meet(mode) {
    let app = spawn_app_in(mode).await;
    let (mut acme, _) = join_workspace(&app, "b", &tenant_token("ann", "acme")).await;
    assert_eq!(next_workspace(&mut acme).await["payload"]["users"], json!([user("ann")]));
    // Same board id, same user id, other tenant.
    let (mut other, _) = join_workspace(&app, "b", &tenant_token("bob", "other")).await;
    assert_eq!(next_workspace(&mut other).await["payload"]["users"], json!([user("bob")]));
    let (_ann, _) = app.join_with("b", &tenant_token("ann", "other")).await;
    assert_eq!(next_workspace(&mut other).await["payload"], user("ann"));
    let (_cid, _) = app.join_with("b", &tenant_token("cid", "acme")).await;
    // acme's next transition is its own cid: nothing of the other tenant came before it.
    assert_eq!(next_workspace(&mut acme).await["payload"], user("cid"));

    let acme_users = presence_until(&app, &tenant_server_token("acme"), |u| {
        u.as_array().is_some_and(|u| u.len() == 2)
    })
    .await;
    let ids: Vec<&str> = acme_users
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["userId"].as_str())
        .collect();
    assert_eq!(ids, ["ann", "cid"]);
}
}

in_both_modes! {
async fn tenant_events_reach_every_session_of_the_tenant_only(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b1", "ann").await;
    let (mut bob, _) = join_workspace(&app, "b2", &token("bob")).await;
    next_workspace(&mut bob).await;
    let (mut eve, _) = app.join_with("b1", &tenant_token("eve", "other")).await;

    let (status, body) = app
        .post(
            "/api/events",
            Some(&server_token()),
            &json!({"type":"release.shipped","payload":{"version":"2.1"}}),
        )
        .await;
    assert_eq!((status, body), (202, json!({})));
    let event = json!({"type":"release.shipped","payload":{"version":"2.1"}});
    assert_eq!(ann.next_frame().await, event);
    assert_eq!(bob.next_frame().await, event);

    let (status, _) = app
        .post(
            "/api/events",
            Some(&tenant_server_token("other")),
            &json!({"type":"release.shipped","payload":{"version":"9"}}),
        )
        .await;
    assert_eq!(status, 202);
    // The other tenant's own event is the first eve gets: the first never reached her.
    assert_eq!(eve.next_frame().await["payload"]["version"], "9");

    for (body, why) in [
        (json!({"type":"workspace.online","payload":{}}), "reserved"),
        (json!({"type":"Bad","payload":{}}), "not a type name"),
        (json!({"type":"a.b","payload":[1]}), "payload not an object"),
    ] {
        let (status, answer) = app.post("/api/events", Some(&server_token()), &body).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    let (status, _) = app.post("/api/events", Some(&token("ann")), &event).await;
    assert_eq!(status, 403, "a session token is not for the API");
    let (status, _) = app.get("/api/presence", None).await;
    assert_eq!(status, 401);
}
}

in_both_modes! {
async fn tenant_presence_lists_each_user_once_with_the_boards_they_are_on(mode) {
    let app = spawn_app_in(mode).await;
    let server = server_token();
    let (status, body) = app.get("/api/presence", Some(&server)).await;
    assert_eq!((status, body), (200, json!({"users": []})));

    let (_ann1, _) = app.join("b2", "ann").await;
    let (mut ann2, _) = app.join("b1", "ann").await;
    let (_ann3, _) = app.join("b1", "ann").await;
    let (_bob, _) = app.join("b2", "bob").await;
    let users = presence_until(&app, &server, |u| u.as_array().is_some_and(|u| u.len() == 2)).await;
    assert_eq!(
        users,
        json!([
            {"userId":"ann","user":{"name":"ann name","avatar":null},"boards":["b1","b2"]},
            {"userId":"bob","user":{"name":"bob name","avatar":null},"boards":["b2"]},
        ])
    );
    // One of two tabs on b1 closing keeps b1; the board list follows the sessions.
    ann2.leave().await;
    let (mut cid, _) = app.join("b3", "cid").await;
    let users = presence_until(&app, &server, |u| u.as_array().is_some_and(|u| u.len() == 3)).await;
    assert_eq!(users[0]["boards"], json!(["b1", "b2"]));
    cid.leave().await;
    presence_until(&app, &server, |u| u.as_array().is_some_and(|u| u.len() == 2)).await;
    // Sessions that end as soon as they open, many at once, leave nobody behind.
    let mut brief = vec![];
    for n in 0..40 {
        brief.push(app.connect(&app.ws_url("b9", &token(&format!("brief{n}")))).await);
    }
    for mut client in brief {
        client.ws.close(None).await.expect("close");
    }
    // Everything about them was registered (or skipped) before the next arrival.
    let (_last, _) = app.join("b9", "last").await;
    let users = presence_until(&app, &server, |u| {
        u.as_array().is_some_and(|u| u.iter().any(|u| u["userId"] == "last"))
    })
    .await;
    let ids: Vec<&str> = users
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["userId"].as_str())
        .collect();
    assert_eq!(ids, ["ann", "bob", "last"]);
}
}

#[actix_web::test]
async fn workspace_query_parameter_is_checked() {
    let app = spawn_app().await;
    let url = format!("{}&workspace=yes", app.ws_url("b", &token("ann")));
    assert_eq!(app.upgrade_status(url).await, 400);
    let url = format!("{}&workspace=0", app.ws_url("b", &token("ann")));
    let mut client = app.connect(&url).await;
    assert_eq!(client.next_frame().await["type"], "board.snapshot");
}
