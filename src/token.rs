//! Bearer-token verification, for deployments without an API Gateway authorizer.
//!
//! The function verifies `Authorization: Bearer <JWT>` itself with the keys and
//! rules of [`TokenConfig`]: a PEM key or shared secret, a JWKS file or inline
//! JWKS, or a JWKS URL fetched on first use and cached. The accepted algorithms
//! come from configuration, never from the token header, and every rejection is
//! a [`TokenError`] whose message states what to fix without echoing the
//! token.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::ConfigError;

/// The largest JWKS document accepted from a JWKS URL, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The source of the verification keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// One key from JWT_VERIFICATION_KEY: a PEM public key, or a shared secret for HS*.
    Static(DecodingKey),
    /// A fixed key set from JWT_JWKS_FILE or JWT_JWKS.
    KeySet(Vec<Jwk>),
    /// A key set fetched from JWT_JWKS_URL on first use.
    Url(String),
}

impl KeySource {
    /// Returns the name of the variable the keys came from, for the start-up log line.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Static(_) => "JWT_VERIFICATION_KEY",
            Self::KeySet(_) => "JWT_JWKS_FILE or JWT_JWKS",
            Self::Url(_) => "JWT_JWKS_URL",
        }
    }
}

/// Verification rules and keys, read from the JWT_* variables.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub keys: KeySource,
    /// JWT_ALGORITHMS, default RS256.
    pub algorithms: Vec<Algorithm>,
    /// JWT_ISSUER: the required `iss`, when set.
    pub issuer: Option<String>,
    /// JWT_AUDIENCE: a token passes when its `aud` or Cognito's `client_id` is among them.
    pub audiences: BTreeSet<String>,
    /// JWT_TOKEN_USE: the required Cognito `token_use` (`access` or `id`), when set.
    pub token_use: Option<String>,
    /// JWT_LEEWAY_SECONDS, default 10, as in AgentOS.
    pub leeway_seconds: u64,
    /// Minimum time between two fetches of a JWKS URL caused by unknown key ids.
    pub refetch_interval: Duration,
}

/// The reason a Bearer token was rejected. The message is the 401 detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error("Only one Authorization header is allowed")]
    MultipleHeaders,
    #[error("Malformed token")]
    Malformed,
    #[error("Token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("Token has no key id (kid), and the key set has several keys")]
    MissingKeyId,
    #[error("Unknown token signing key")]
    UnknownKey,
    #[error("Invalid token signature")]
    InvalidSignature,
    #[error("Token has expired")]
    Expired,
    #[error("Token is not valid yet")]
    NotYetValid,
    #[error("Token has no expiration time (exp)")]
    MissingExpiration,
    #[error("Invalid token claims")]
    InvalidClaims,
    #[error("Invalid token issuer")]
    InvalidIssuer,
    #[error("Invalid token audience")]
    InvalidAudience,
    #[error("Invalid token use: expected an {0} token")]
    InvalidTokenUse(String),
    /// The JWKS URL could not be fetched or read. A server-side failure, not the caller's.
    #[error("the JWKS URL could not be fetched: {0}")]
    KeysUnavailable(String),
}

impl TokenConfig {
    /// Reads the JWT_* variables through `lookup`, or returns None when no key
    /// source is configured, in which case Bearer tokens are not trusted.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let configured: Vec<(&'static str, String)> = [
            "JWT_VERIFICATION_KEY",
            "JWT_JWKS_FILE",
            "JWT_JWKS",
            "JWT_JWKS_URL",
        ]
        .into_iter()
        .filter_map(|name| {
            lookup(name)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (name, value))
        })
        .collect();

        let (variable, value) = match configured.as_slice() {
            [] => return Ok(None),
            [only] => only.clone(),
            [first, second, ..] => {
                return Err(ConfigError::new(
                    first.0,
                    format!("set only one key source, but {} is set too", second.0),
                ));
            }
        };

        let algorithms = parse_algorithms(lookup("JWT_ALGORITHMS").as_deref())?;
        let keys = match variable {
            "JWT_VERIFICATION_KEY" => {
                KeySource::Static(parse_verification_key(&value, &algorithms)?)
            }
            "JWT_JWKS_FILE" => {
                let json = std::fs::read_to_string(value.trim()).map_err(|error| {
                    ConfigError::new(variable, format!("cannot read '{}': {error}", value.trim()))
                })?;
                KeySource::KeySet(
                    parse_key_set(&json).map_err(|message| ConfigError::new(variable, message))?,
                )
            }
            "JWT_JWKS" => KeySource::KeySet(
                parse_key_set(&value).map_err(|message| ConfigError::new(variable, message))?,
            ),
            _ => KeySource::Url(validate_jwks_url(value.trim())?),
        };

        let token_use = match lookup("JWT_TOKEN_USE").as_deref().map(str::trim) {
            None | Some("") | Some("any") => None,
            Some(token_use @ ("access" | "id")) => Some(token_use.to_owned()),
            Some(other) => {
                return Err(ConfigError::new(
                    "JWT_TOKEN_USE",
                    format!("expected access, id or any, got '{other}'"),
                ));
            }
        };

        let leeway_seconds = match lookup("JWT_LEEWAY_SECONDS") {
            None => 10,
            Some(value) => value.trim().parse().map_err(|_| {
                ConfigError::new(
                    "JWT_LEEWAY_SECONDS",
                    format!("expected a whole number of seconds, got '{}'", value.trim()),
                )
            })?,
        };

        Ok(Some(Self {
            keys,
            algorithms,
            issuer: lookup("JWT_ISSUER")
                .map(|issuer| issuer.trim().to_owned())
                .filter(|issuer| !issuer.is_empty()),
            audiences: lookup("JWT_AUDIENCE")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|audience| !audience.is_empty())
                .map(str::to_owned)
                .collect(),
            token_use,
            leeway_seconds,
            refetch_interval: Duration::from_secs(60),
        }))
    }
}

fn parse_algorithms(value: Option<&str>) -> Result<Vec<Algorithm>, ConfigError> {
    let Some(value) = value.filter(|value| !value.trim().is_empty()) else {
        return Ok(vec![Algorithm::RS256]);
    };

    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Algorithm::from_str(name).map_err(|_| {
                ConfigError::new("JWT_ALGORITHMS", format!("unknown algorithm '{name}'"))
            })
        })
        .collect()
}

/// Parses JWT_VERIFICATION_KEY: a PEM public key (RSA or EC), or else a shared
/// secret. The algorithms must suit the key, so that a token can never be
/// verified with a key of another family.
fn parse_verification_key(
    value: &str,
    algorithms: &[Algorithm],
) -> Result<DecodingKey, ConfigError> {
    const VARIABLE: &str = "JWT_VERIFICATION_KEY";

    let names: Vec<String> = algorithms
        .iter()
        .map(|algorithm| format!("{algorithm:?}"))
        .collect();
    let names = names.join(", ");
    let pem = value.trim();

    if !pem.starts_with("-----BEGIN") {
        if algorithms
            .iter()
            .any(|algorithm| algorithm.family() != AlgorithmFamily::Hmac)
        {
            return Err(ConfigError::new(
                VARIABLE,
                "is not a PEM key, so it is used as a shared secret, and JWT_ALGORITHMS must then list only HS256, HS384 or HS512",
            ));
        }
        return Ok(DecodingKey::from_secret(value.as_bytes()));
    }

    let key = if algorithms
        .iter()
        .all(|algorithm| algorithm.family() == AlgorithmFamily::Rsa)
    {
        DecodingKey::from_rsa_pem(pem.as_bytes())
    } else if algorithms
        .iter()
        .all(|algorithm| algorithm.family() == AlgorithmFamily::Ec)
    {
        DecodingKey::from_ec_pem(pem.as_bytes())
    } else {
        return Err(ConfigError::new(
            VARIABLE,
            format!(
                "one PEM key cannot serve algorithms of different families ({names}) in JWT_ALGORITHMS"
            ),
        ));
    };

    key.map_err(|error| {
        ConfigError::new(
            VARIABLE,
            format!("is not a valid PEM public key for {names}: {error}"),
        )
    })
}

/// Parses a JWKS document and keeps its signature keys. Keys of a type this
/// crate does not support, or meant for encryption, are skipped.
fn parse_key_set(json: &str) -> Result<Vec<Jwk>, String> {
    let document: Value =
        serde_json::from_str(json).map_err(|error| format!("is not JSON: {error}"))?;
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err("is not a JWKS: expected an object with a \"keys\" array".to_owned());
    };

    let keys: Vec<Jwk> = entries
        .iter()
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
        .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .collect();

    if keys.is_empty() {
        return Err("is not a usable JWKS: it contains no supported signature key".to_owned());
    }
    Ok(keys)
}

/// Accepts an https URL, or an http URL on the loopback interface for local tests.
fn validate_jwks_url(url: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|error| {
        ConfigError::new("JWT_JWKS_URL", format!("'{url}' is not a URL: {error}"))
    })?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));

    match parsed.scheme() {
        "https" => Ok(url.to_owned()),
        "http" if loopback => Ok(url.to_owned()),
        _ => Err(ConfigError::new(
            "JWT_JWKS_URL",
            format!("'{url}' must use https (plain http is allowed only on 127.0.0.1)"),
        )),
    }
}

/// A JWKS fetched from a URL, and when.
#[derive(Debug, Default)]
struct FetchedKeys {
    keys: Vec<Jwk>,
    last_fetch: Option<Instant>,
}

/// Verifies Bearer tokens. Built once per cold start; it makes no network call
/// until the first token that needs the JWKS URL.
#[derive(Debug)]
pub struct TokenVerifier {
    config: TokenConfig,
    fetched: Mutex<FetchedKeys>,
    http: reqwest::Client,
}

impl TokenVerifier {
    pub fn new(config: TokenConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            config,
            fetched: Mutex::new(FetchedKeys::default()),
            http,
        }
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// A [`TokenError`] for every reason to reject the token, and
    /// [`TokenError::KeysUnavailable`] when a JWKS URL cannot be fetched.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }

        let key = self.decoding_key(header.kid.as_deref(), header.alg).await?;

        // jsonwebtoken checks the header's algorithm against this list again,
        // and requires every listed algorithm to be of the key's family.
        let mut validation = Validation::new(header.alg);
        validation.algorithms = self
            .config
            .algorithms
            .iter()
            .copied()
            .filter(|algorithm| algorithm.family() == header.alg.family())
            .collect();
        validation.leeway = self.config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // The issuer and audience are checked below: jsonwebtoken lets a token
        // without `iss` pass an issuer check, and Cognito access tokens carry
        // `client_id` instead of `aud`.
        validation.validate_aud = false;

        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| map_jwt_error(&error))?
            .claims;

        self.check_issuer(&claims)?;
        self.check_audience(&claims)?;
        self.check_token_use(&claims)?;
        Ok(claims)
    }

    /// Requires `iss` to be a string equal to JWT_ISSUER, when that is set.
    fn check_issuer(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        match &self.config.issuer {
            None => Ok(()),
            Some(expected)
                if claims.get("iss").and_then(Value::as_str) == Some(expected.as_str()) =>
            {
                Ok(())
            }
            Some(_) => Err(TokenError::InvalidIssuer),
        }
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        if self.config.audiences.is_empty() {
            return Ok(());
        }

        let mut presented: Vec<&str> = match claims.get("aud") {
            Some(Value::String(audience)) => vec![audience.as_str()],
            Some(Value::Array(audiences)) => audiences.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if let Some(client_id) = claims.get("client_id").and_then(Value::as_str) {
            presented.push(client_id);
        }

        if presented
            .iter()
            .any(|audience| self.config.audiences.contains(*audience))
        {
            Ok(())
        } else {
            Err(TokenError::InvalidAudience)
        }
    }

    fn check_token_use(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        match &self.config.token_use {
            None => Ok(()),
            Some(expected)
                if claims.get("token_use").and_then(Value::as_str) == Some(expected.as_str()) =>
            {
                Ok(())
            }
            Some(expected) => Err(TokenError::InvalidTokenUse(expected.clone())),
        }
    }

    async fn decoding_key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, TokenError> {
        let url = match &self.config.keys {
            KeySource::Static(key) => return Ok(key.clone()),
            KeySource::KeySet(keys) => return select_key(keys, kid, algorithm),
            KeySource::Url(url) => url,
        };

        let mut fetched = self.fetched.lock().await;

        let known = match kid {
            Some(kid) => fetched
                .keys
                .iter()
                .any(|jwk| jwk.common.key_id.as_deref() == Some(kid)),
            None => !fetched.keys.is_empty(),
        };
        let may_refetch = fetched
            .last_fetch
            .is_none_or(|last_fetch| last_fetch.elapsed() >= self.config.refetch_interval);
        // Until a first fetch succeeds, every token tries again, so that an
        // outage gets 500 rather than a misleading 401 for an unknown key.
        if !known && (may_refetch || fetched.keys.is_empty()) {
            tracing::info!(jwks_url = url.as_str(), "fetching the JWKS");
            match self.fetch_key_set(url).await {
                Ok(keys) => {
                    fetched.keys = keys;
                    fetched.last_fetch = Some(Instant::now());
                }
                // A failed refetch keeps the cached keys and waits out the interval.
                Err(error) => {
                    tracing::error!(jwks_url = url.as_str(), error = %error, "JWKS fetch failed");
                    if fetched.keys.is_empty() {
                        return Err(error);
                    }
                    fetched.last_fetch = Some(Instant::now());
                }
            }
        }

        select_key(&fetched.keys, kid, algorithm)
    }

    async fn fetch_key_set(&self, url: &str) -> Result<Vec<Jwk>, TokenError> {
        let unavailable = |message: String| TokenError::KeysUnavailable(message);

        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(unavailable("the JWKS is larger than 1 MB".to_owned()));
        }

        let body = response
            .bytes()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable("the JWKS is larger than 1 MB".to_owned()));
        }
        let json = std::str::from_utf8(&body)
            .map_err(|_| unavailable("the JWKS is not UTF-8".to_owned()))?;
        parse_key_set(json).map_err(|message| unavailable(format!("the JWKS {message}")))
    }
}

/// Picks the key for a token: the key with its kid, or the only key when the
/// token has no kid. A key that names another algorithm is never used.
fn select_key(
    keys: &[Jwk],
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<DecodingKey, TokenError> {
    let jwk = match kid {
        Some(kid) => keys
            .iter()
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
            .ok_or(TokenError::UnknownKey)?,
        None => match keys {
            [only] => only,
            [] => return Err(TokenError::UnknownKey),
            _ => return Err(TokenError::MissingKeyId),
        },
    };

    if let Some(key_algorithm) = jwk.common.key_algorithm {
        let same = serde_json::to_value(key_algorithm).ok() == serde_json::to_value(algorithm).ok();
        if !same {
            return Err(TokenError::AlgorithmNotAllowed);
        }
    }

    DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey)
}

fn map_jwt_error(error: &jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;

    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::InvalidSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::InvalidIssuer,
        ErrorKind::InvalidAudience => TokenError::InvalidAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => TokenError::MissingExpiration,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => TokenError::InvalidClaims,
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const RSA_PUBLIC_KEY: &str = include_str!("../tests/fixtures/keys/rsa-public.pem");
    const EC_PUBLIC_KEY: &str = include_str!("../tests/fixtures/keys/ec-public.pem");

    fn config_from(pairs: &[(&str, &str)]) -> Result<Option<TokenConfig>, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        TokenConfig::from_lookup(&|name: &str| env.get(name).cloned())
    }

    fn failing_variable(pairs: &[(&str, &str)]) -> &'static str {
        config_from(pairs).unwrap_err().variable
    }

    #[test]
    fn no_key_source_disables_tokens() {
        assert!(config_from(&[]).unwrap().is_none());
        assert!(
            config_from(&[("JWT_ALGORITHMS", "ES256")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn defaults_match_agentos() {
        let config = config_from(&[("JWT_VERIFICATION_KEY", RSA_PUBLIC_KEY)])
            .unwrap()
            .unwrap();

        assert_eq!(config.algorithms, [Algorithm::RS256]);
        assert_eq!(config.leeway_seconds, 10);
        assert_eq!(config.token_use, None);
        assert!(config.audiences.is_empty());
        assert_eq!(config.refetch_interval, Duration::from_secs(60));
    }

    #[test]
    fn ec_pem_needs_ec_algorithms() {
        assert!(
            config_from(&[
                ("JWT_VERIFICATION_KEY", EC_PUBLIC_KEY),
                ("JWT_ALGORITHMS", "ES256")
            ])
            .is_ok()
        );
        assert_eq!(
            failing_variable(&[("JWT_VERIFICATION_KEY", EC_PUBLIC_KEY)]),
            "JWT_VERIFICATION_KEY"
        );
    }

    #[test]
    fn invalid_configurations_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (
                &[("JWT_JWKS_FILE", "/nonexistent/jwks.json")],
                "JWT_JWKS_FILE",
            ),
            (&[("JWT_JWKS", r#"{"issuer": "x"}"#)], "JWT_JWKS"),
            (&[("JWT_JWKS", "not json")], "JWT_JWKS"),
            (
                &[("JWT_JWKS", r#"{"keys": [{"kty": "unknown"}]}"#)],
                "JWT_JWKS",
            ),
            (
                &[(
                    "JWT_VERIFICATION_KEY",
                    "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----",
                )],
                "JWT_VERIFICATION_KEY",
            ),
            (
                &[("JWT_VERIFICATION_KEY", "a shared secret")],
                "JWT_VERIFICATION_KEY",
            ),
            (
                &[
                    ("JWT_VERIFICATION_KEY", RSA_PUBLIC_KEY),
                    ("JWT_ALGORITHMS", "RS256,XX999"),
                ],
                "JWT_ALGORITHMS",
            ),
            (
                &[("JWT_JWKS_URL", "http://issuer.example/jwks.json")],
                "JWT_JWKS_URL",
            ),
            (&[("JWT_JWKS_URL", "not a url")], "JWT_JWKS_URL"),
            (
                &[
                    ("JWT_VERIFICATION_KEY", RSA_PUBLIC_KEY),
                    ("JWT_TOKEN_USE", "refresh"),
                ],
                "JWT_TOKEN_USE",
            ),
            (
                &[
                    ("JWT_VERIFICATION_KEY", RSA_PUBLIC_KEY),
                    ("JWT_LEEWAY_SECONDS", "ten"),
                ],
                "JWT_LEEWAY_SECONDS",
            ),
        ];

        for (pairs, variable) in cases {
            assert_eq!(failing_variable(pairs), variable, "{pairs:?}");
        }
    }

    #[test]
    fn two_key_sources_are_rejected() {
        let error = config_from(&[
            ("JWT_VERIFICATION_KEY", RSA_PUBLIC_KEY),
            ("JWT_JWKS_URL", "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example/.well-known/jwks.json"),
        ])
        .unwrap_err();

        assert!(error.message.contains("JWT_JWKS_URL"), "{error}");
    }

    #[test]
    fn https_and_loopback_urls_are_accepted() {
        for url in [
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
        ] {
            let config = config_from(&[("JWT_JWKS_URL", url)]).unwrap().unwrap();
            assert!(matches!(config.keys, KeySource::Url(_)), "{url}");
        }
    }

    #[test]
    fn encryption_keys_are_skipped() {
        let jwks = r#"{"keys": [{"kty": "oct", "use": "enc", "k": "c2VjcmV0"}]}"#;

        assert_eq!(failing_variable(&[("JWT_JWKS", jwks)]), "JWT_JWKS");
    }
}
