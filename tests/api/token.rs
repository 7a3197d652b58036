//! `boardcast token`: tokens an operator makes with the service's own key.

use crate::support::*;
use boardcast::auth::{Role, Verifier};
use boardcast::config::JwtKey;

/// Runs `boardcast token ARGS` with `env`; exit code, stdout, stderr.
fn token_command(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .arg("token")
        .args(args)
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secret() -> &'static str {
    std::str::from_utf8(SECRET).expect("utf-8 secret")
}

#[actix_web::test]
async fn a_token_made_with_the_secret_opens_a_session_and_carries_its_claims() {
    let (code, token, err) = token_command(
        &[
            "--user", "ann", "--name", "Ann", "--tenant", "acme", "--boards", "b,c", "--ttl", "120",
        ],
        &[("JWT_SECRET", secret())],
    );
    assert_eq!(code, 0, "{err}");
    let identity = Verifier::new(&JwtKey::Secret(SECRET.to_vec()))
        .expect("key")
        .verify(&token)
        .expect("a valid token");
    assert_eq!(
        (
            identity.user_id.as_str(),
            identity.tenant.as_str(),
            identity.role
        ),
        ("ann", "acme", Role::Editor)
    );
    assert_eq!(identity.name.as_deref(), Some("Ann"));
    assert!(identity.exp <= boardcast::auth::now_secs() + 120);

    let instance = Instance::start(&[]);
    let (_, snapshot) = instance.app().join_with("b", &token).await;
    assert_eq!(snapshot["payload"]["self"]["userId"], "ann");
    assert_eq!(
        instance
            .app()
            .upgrade_status(instance.app().ws_url("other", &token))
            .await,
        403,
        "the boards claim holds"
    );
    let (code, server, _) = token_command(
        &["--user", "backend", "--role", "server"],
        &[("JWT_SECRET", secret())],
    );
    assert_eq!(code, 0);
    let (status, _) = instance
        .app()
        .get("/api/boards/b/presence", Some(&server))
        .await;
    assert_eq!(status, 200);
}

#[test]
fn without_a_usable_key_or_with_bad_values_it_says_why() {
    let (code, out, err) = token_command(&["--user", "ann"], &[]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("JWT_SECRET is not set"), "{err}");
    let (code, _, err) = token_command(&["--user", "ann"], &[("JWT_SECRET", "   ")]);
    assert_eq!(code, 2);
    assert!(err.contains("JWT_SECRET"), "{err}");
    let (code, _, err) = token_command(
        &["--user", "ann", "--tenant", "a|b"],
        &[("JWT_SECRET", secret())],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--tenant"), "{err}");
    let (code, _, err) = token_command(
        &["--user", "ann", "--role", "admin"],
        &[("JWT_SECRET", secret())],
    );
    assert_eq!(code, 2, "{err}");
}

/// A P-256 key pair made for this test only.
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrPuM+FTgVmLrOSfT
Nz5mp3TkKT8Ztrpal9cfdOLfKVehRANCAARKk0km85uqMsY6VQsrW+IVyHA1fMpQ
hZcF6xNN+KFPcJyHbwCqs5zAvMcIqhQqycBVPtNBpTKlsg7HST7AZnRj
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESpNJJvObqjLGOlULK1viFchwNXzK
UIWXBesTTfihT3Cch28AqrOcwLzHCKoUKsnAVT7TQaUypbIOx0k+wGZ0Yw==
-----END PUBLIC KEY-----
";

#[test]
fn a_key_pair_service_gets_tokens_signed_with_the_private_key() {
    let dir = std::env::temp_dir().join(format!("boardcast-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    std::fs::write(&private, EC_PRIVATE).expect("private key");
    std::fs::write(&public, EC_PUBLIC).expect("public key");
    let env = [
        ("JWT_PUBLIC_KEY", public.to_str().expect("path")),
        ("JWT_ALGORITHM", "ES256"),
    ];
    let (code, _, err) = token_command(&["--user", "ann"], &env);
    assert_eq!(code, 2);
    assert!(err.contains("--private-key"), "{err}");
    let (code, token, err) = token_command(
        &[
            "--user",
            "ann",
            "--private-key",
            private.to_str().expect("path"),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let verifier = Verifier::new(&JwtKey::PublicKey {
        algorithm: jsonwebtoken::Algorithm::ES256,
        pem: EC_PUBLIC.as_bytes().to_vec(),
    })
    .expect("key");
    assert_eq!(verifier.verify(&token).expect("valid").user_id, "ann");
    let _ = std::fs::remove_dir_all(&dir);
}
