//! The binary itself: configuration errors and shutdown.

use crate::support::*;

#[actix_web::test]
async fn sigterm_closes_every_session_with_1012_and_exits() {
    let mut instance = Instance::start(&[]);
    let app = instance.app();
    let (mut ann, _) = app.join("b", "ann").await;
    let (mut bob, _) = app.join("other", "bob").await;
    instance.signal("TERM");
    assert_eq!(ann.expect_close().await, 1012);
    assert_eq!(bob.expect_close().await, 1012);
    assert!(instance.wait_exit().await.success());
}

/// With many sessions, some are still in their rooms when the server stops after its grace:
/// an expected end of a shutdown, not an error for each of them.
#[actix_web::test]
async fn stopping_with_many_sessions_logs_no_errors() {
    let mut instance = Instance::start(&[]);
    let app = instance.app();
    let mut held = vec![];
    for n in 0..600 {
        held.push(app.join(&format!("b{}", n % 60), &format!("u{n}")).await);
    }
    // Every client goes away as the instance is told to stop, as when a load generator exits.
    drop(held);
    instance.signal("TERM");
    assert!(instance.wait_exit().await.success());
    let log = instance.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .env("BIND", "127.0.0.1:0")
        .env("CLIENT_TIMEOUT", "soon")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("CLIENT_TIMEOUT"), "{log}");
}
