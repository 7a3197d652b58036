//! Tokens: what a JWT must hold, and the [`Identity`] a verified one gives.
//!
//! Verification happens before the WebSocket upgrade and again on `auth.refresh`, so both
//! share [`Verifier::verify`].

use jsonwebtoken::{decode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtKey;

/// Largest clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends every kind of event.
    #[default]
    Editor,
    /// Sends ephemeral events only.
    Viewer,
    /// Backends: the HTTP API only.
    Server,
}

/// The claims boardcast reads from a token; others are ignored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Display name shown in presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar URL shown in presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Isolation boundary; boards of different tenants never meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When present, the only boards this token may join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boards: Option<Vec<String>>,
    /// The holder's role; editor when absent.
    #[serde(default)]
    pub role: Role,
}

/// The claims as a token carries them, read leniently where RFC 7519 allows: `exp` and `nbf`
/// are NumericDates, which may have a fraction.
#[derive(Deserialize)]
struct Incoming {
    sub: String,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    boards: Option<Vec<String>>,
    #[serde(default)]
    role: Role,
}

/// Whether `tenant` is usable as a tenant name: 1–64 characters of `[A-Za-z0-9_-]`, the same
/// alphabet as board ids, so that every name built from it (Redis keys and channels) can be
/// split back into its parts.
pub fn valid_tenant(tenant: &str) -> bool {
    crate::event::valid_board_id(tenant)
}

/// A verified token, as the rest of the service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user_id: String,
    /// The tenant, `"default"` when the token names none.
    pub tenant: String,
    /// Display name, if any.
    pub name: Option<String>,
    /// Avatar URL, if any.
    pub avatar: Option<String>,
    /// The boards the token is limited to, if it is.
    pub boards: Option<Vec<String>>,
    /// What the holder may do.
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl Identity {
    /// Whether the token allows joining `board`.
    pub fn may_join(&self, board: &str) -> bool {
        self.boards
            .as_ref()
            .is_none_or(|boards| boards.iter().any(|b| b == board))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token came with the request.
    #[error("a token is required")]
    Missing,
    /// The token did not verify: signature, algorithm, expiry or claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies tokens with the instance's one key and one algorithm.
#[derive(Clone)]
pub struct Verifier {
    /// The key tokens must be signed with.
    key: DecodingKey,
    /// Algorithm, leeway and required claims.
    validation: Validation,
    /// Dev mode signs its own tokens with this key.
    dev_signer: Option<EncodingKey>,
}

impl Verifier {
    /// Builds the verifier for the configured key.
    pub fn new(jwt: &JwtKey) -> Result<Verifier, AuthError> {
        let (key, algorithm, dev_signer) = match jwt {
            JwtKey::Secret(secret) => (DecodingKey::from_secret(secret), Algorithm::HS256, None),
            JwtKey::Dev(secret) => (
                DecodingKey::from_secret(secret),
                Algorithm::HS256,
                Some(EncodingKey::from_secret(secret)),
            ),
            JwtKey::PublicKey { algorithm, pem } => {
                let key = match algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                    _ => DecodingKey::from_rsa_pem(pem),
                }
                .map_err(|e| AuthError::Invalid(format!("public key: {e}")))?;
                (key, *algorithm, None)
            }
        };
        let mut validation = Validation::new(algorithm);
        // `exp` and `nbf` are checked in `verify`, which accepts fractional dates; the library
        // reads them as whole numbers only.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        Ok(Verifier {
            key,
            validation,
            dev_signer,
        })
    }

    /// Requires `aud` to name `audience` and `iss` to be `issuer`, each when given. Tokens are
    /// not checked for either otherwise: an `aud` claim alone is no reason to refuse a token.
    pub fn expecting(mut self, audience: Option<&str>, issuer: Option<&str>) -> Verifier {
        let mut required = vec![];
        if let Some(audience) = audience {
            self.validation.validate_aud = true;
            self.validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        self.validation.set_required_spec_claims(&required);
        self
    }

    /// Checks signature, algorithm, expiry, not-before and claims, and returns who the token
    /// speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = now_secs();
        let data = decode::<Incoming>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        let exp = numeric_date(claims.exp, "exp")?;
        if exp.saturating_add(LEEWAY_SECS) < now {
            return Err(AuthError::Invalid("the token has expired".into()));
        }
        if let Some(nbf) = claims.nbf {
            if numeric_date(nbf, "nbf")? > now.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::Invalid(
                    "the token is not valid yet (nbf)".into(),
                ));
            }
        }
        let tenant = claims.tenant.unwrap_or_else(|| "default".into());
        if !valid_tenant(&tenant) {
            return Err(AuthError::Invalid(
                "tenant must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
            ));
        }
        Ok(Identity {
            user_id: claims.sub,
            tenant,
            name: claims.name,
            avatar: claims.avatar,
            boards: claims.boards,
            role: claims.role,
            exp,
        })
    }

    /// Signs `claims` with the dev key; `None` unless the instance is in dev mode.
    pub fn sign_dev(&self, claims: &Claims) -> Option<String> {
        let key = self.dev_signer.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).ok()
    }
}

/// A NumericDate claim as whole seconds (a fraction is dropped); negative or not finite is
/// refused.
fn numeric_date(value: f64, claim: &str) -> Result<u64, AuthError> {
    if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 {
        Ok(value as u64)
    } else {
        Err(AuthError::Invalid(format!("{claim} is not a date")))
    }
}

/// Seconds since the epoch, as JWT `exp` counts them.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            name: Some("Ada".into()),
            avatar: None,
            tenant: None,
            boards: None,
            role: Role::Editor,
        }
    }

    fn sign(secret: &[u8], claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("signing works")
    }

    #[test]
    fn a_signed_token_decodes_to_an_identity() {
        let verifier = Verifier::new(&JwtKey::Secret(b"0123456789abcdef".to_vec())).expect("key");
        let token = sign(b"0123456789abcdef", &claims("u1", now_secs() + 60));
        let identity = verifier.verify(&token).expect("valid token");
        assert_eq!(identity.user_id, "u1");
        assert_eq!(identity.tenant, "default");
        assert_eq!(identity.role, Role::Editor);
    }

    #[test]
    fn a_wrong_secret_or_expired_token_is_refused() {
        let verifier = Verifier::new(&JwtKey::Secret(b"0123456789abcdef".to_vec())).expect("key");
        let other = sign(b"another secret!!", &claims("u1", now_secs() + 60));
        assert!(verifier.verify(&other).is_err());
        let expired = sign(b"0123456789abcdef", &claims("u1", now_secs() - 30));
        assert!(verifier.verify(&expired).is_err());
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let verifier = Verifier::new(&JwtKey::Secret(b"0123456789abcdef".to_vec())).expect("key");
        // {"alg":"none","typ":"JWT"} . {"sub":"u1","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(verifier.verify(token).is_err());
    }

    /// A P-256 key pair made for this test only.
    const TEST_EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrPuM+FTgVmLrOSfT
Nz5mp3TkKT8Ztrpal9cfdOLfKVehRANCAARKk0km85uqMsY6VQsrW+IVyHA1fMpQ
hZcF6xNN+KFPcJyHbwCqs5zAvMcIqhQqycBVPtNBpTKlsg7HST7AZnRj
-----END PRIVATE KEY-----
";
    const TEST_EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESpNJJvObqjLGOlULK1viFchwNXzK
UIWXBesTTfihT3Cch28AqrOcwLzHCKoUKsnAVT7TQaUypbIOx0k+wGZ0Yw==
-----END PUBLIC KEY-----
";

    #[test]
    fn a_public_key_instance_accepts_its_algorithm_only() {
        let verifier = Verifier::new(&JwtKey::PublicKey {
            algorithm: Algorithm::ES256,
            pem: TEST_EC_PUBLIC.as_bytes().to_vec(),
        })
        .expect("key");
        let signer = EncodingKey::from_ec_pem(TEST_EC_PRIVATE.as_bytes()).expect("private key");
        let es256 = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims("u1", now_secs() + 60),
            &signer,
        )
        .expect("signing works");
        assert_eq!(verifier.verify(&es256).expect("valid token").user_id, "u1");
        // An HS256 token, even one signed with the public key's text as its secret, is refused.
        let hs256 = sign(TEST_EC_PUBLIC.as_bytes(), &claims("u1", now_secs() + 60));
        assert!(verifier.verify(&hs256).is_err());
        assert!(verifier.sign_dev(&claims("u1", now_secs() + 60)).is_none());
    }

    #[test]
    fn dev_mode_signs_tokens_it_accepts() {
        let verifier =
            Verifier::new(&JwtKey::Dev(b"dev secret of 32 bytes..........".to_vec())).expect("key");
        let token = verifier
            .sign_dev(&claims("u2", now_secs() + 60))
            .expect("dev mode signs");
        assert_eq!(verifier.verify(&token).expect("valid").user_id, "u2");
    }

    fn secret_verifier() -> Verifier {
        Verifier::new(&JwtKey::Secret(b"0123456789abcdef".to_vec())).expect("key")
    }

    fn sign_json(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef"),
        )
        .expect("signing works")
    }

    #[test]
    fn nbf_is_honoured_with_the_leeway() {
        let verifier = secret_verifier();
        let now = now_secs();
        let later = sign_json(serde_json::json!({"sub":"u","exp":now+7200,"nbf":now+3600}));
        assert!(
            verifier.verify(&later).is_err(),
            "valid only an hour from now"
        );
        let skewed = sign_json(serde_json::json!({"sub":"u","exp":now+7200,"nbf":now+3}));
        assert!(verifier.verify(&skewed).is_ok(), "within the leeway");
        let past = sign_json(serde_json::json!({"sub":"u","exp":now+60,"nbf":now-60}));
        assert!(verifier.verify(&past).is_ok());
    }

    #[test]
    fn fractional_dates_are_numeric_dates() {
        let verifier = secret_verifier();
        let now = now_secs() as f64;
        let token = sign_json(serde_json::json!({"sub":"u","exp":now+60.5,"nbf":now-0.25}));
        assert!(verifier.verify(&token).is_ok());
        let expired = sign_json(serde_json::json!({"sub":"u","exp":now-60.5}));
        assert!(verifier.verify(&expired).is_err());
        for bad in [
            serde_json::json!(-1.0),
            serde_json::json!("soon"),
            serde_json::json!(1e300),
        ] {
            let token = sign_json(serde_json::json!({"sub":"u","exp":bad}));
            assert!(verifier.verify(&token).is_err(), "exp {bad}");
        }
    }

    #[test]
    fn aud_and_iss_are_checked_only_when_configured() {
        let now = now_secs();
        let with_aud =
            sign_json(serde_json::json!({"sub":"u","exp":now+60,"aud":"app","iss":"me"}));
        let without = sign_json(serde_json::json!({"sub":"u","exp":now+60}));
        assert!(
            secret_verifier().verify(&with_aud).is_ok(),
            "no audience configured"
        );
        let strict = secret_verifier().expecting(Some("app"), Some("me"));
        assert!(strict.verify(&with_aud).is_ok());
        assert!(strict.verify(&without).is_err(), "aud and iss required");
        let other = secret_verifier().expecting(Some("other"), None);
        assert!(other.verify(&with_aud).is_err());
        let wrong_iss = secret_verifier().expecting(None, Some("them"));
        assert!(wrong_iss.verify(&with_aud).is_err());
    }

    #[test]
    fn tenants_outside_the_board_alphabet_are_refused() {
        let verifier = secret_verifier();
        let now = now_secs();
        for tenant in ["acme|x", "t}:v:X", "", "a b", &"t".repeat(65)] {
            let token = sign_json(serde_json::json!({"sub":"u","exp":now+60,"tenant":tenant}));
            assert!(verifier.verify(&token).is_err(), "tenant {tenant:?}");
        }
        let token =
            sign_json(serde_json::json!({"sub":"auth0|123","exp":now+60,"tenant":"acme-1_x"}));
        let identity = verifier.verify(&token).expect("valid");
        assert_eq!(
            (identity.user_id.as_str(), identity.tenant.as_str()),
            ("auth0|123", "acme-1_x")
        );
    }

    #[test]
    fn a_boards_claim_limits_joining() {
        let mut identity = Identity {
            user_id: "u".into(),
            tenant: "t".into(),
            name: None,
            avatar: None,
            boards: Some(vec!["a".into()]),
            role: Role::Editor,
            exp: 0,
        };
        assert!(identity.may_join("a"));
        assert!(!identity.may_join("b"));
        identity.boards = None;
        assert!(identity.may_join("b"));
    }
}
