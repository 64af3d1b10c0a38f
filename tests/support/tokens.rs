//! Real signed tokens and JWKS documents made from the test-only keys in
//! tests/fixtures/keys.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::repository_root;

/// Returns the path of a fixture key, for example `rsa-public.pem`.
pub fn key_path(name: &str) -> String {
    repository_root()
        .join("tests/fixtures/keys")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Reads a fixture key.
pub fn key_pem(name: &str) -> String {
    std::fs::read_to_string(key_path(name))
        .unwrap_or_else(|error| panic!("read key {name}: {error}"))
}

/// Returns the current time in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn encoding_key(key: &str, algorithm: Algorithm) -> EncodingKey {
    let pem = key_pem(&format!("{key}-private.pem"));
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    }
}

/// Signs `claims` with the private half of fixture key `key` (`rsa`,
/// `other-rsa` or `ec`), naming `kid` in the header when given.
pub fn sign(claims: &Value, key: &str, algorithm: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(key, algorithm)).unwrap()
}

/// Signs `claims` with RS256 and the main test key, under kid `rsa-1`.
pub fn sign_rs256(claims: &Value) -> String {
    sign(claims, "rsa", Algorithm::RS256, Some("rsa-1"))
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Claims of a valid token for `sub`, expiring in an hour.
pub fn claims_for(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 3600})
}

/// Builds a JWKS document of the public halves of `(key, algorithm, kid)` fixture keys.
pub fn jwks(keys: &[(&str, Algorithm, &str)]) -> Value {
    let keys: Vec<Jwk> = keys
        .iter()
        .map(|(key, algorithm, kid)| {
            let mut jwk =
                Jwk::from_encoding_key(&encoding_key(key, *algorithm), *algorithm).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    json!({ "keys": keys })
}
