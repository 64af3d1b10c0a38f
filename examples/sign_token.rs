//! Prints a JWT signed with the TEST-ONLY RSA key of tests/fixtures/keys, for
//! trying the function's Bearer-token verification locally.
//!
//! ```text
//! cargo run --example sign_token -- user-a                          # expires in an hour
//! cargo run --example sign_token -- ops-admin --scope agent_os:admin
//! cargo run --example sign_token -- ops-admin --groups admin,support
//! cargo run --example sign_token -- user-g --expires-at 4102444800  # for sample events
//! ```
//!
//! The function accepts these tokens only when JWT_VERIFICATION_KEY is the
//! matching public key, tests/fixtures/keys/rsa-public.pem. That key pair is
//! public, so never configure it in a deployment.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const USAGE: &str =
    "usage: sign_token <sub> [--scope SCOPES] [--groups GROUPS] [--expires-at UNIX_SECONDS]";
const PRIVATE_KEY: &str = include_str!("../tests/fixtures/keys/rsa-private.pem");

/// The kid of the test key in the JWKS documents of the tests.
const KEY_ID: &str = "rsa-1";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match token_for(&arguments) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sign_token: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn token_for(arguments: &[String]) -> Result<String, String> {
    let (sub, options) = arguments.split_first().ok_or("missing <sub>")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_secs();

    let mut claims = json!({"sub": sub, "iat": now, "exp": now + 3600});
    for pair in options.chunks(2) {
        let [option, value] = pair else {
            return Err(format!("option {} needs a value", pair[0]));
        };
        match option.as_str() {
            "--scope" => claims["scope"] = json!(value),
            "--groups" => claims["cognito:groups"] = json!(value.split(',').collect::<Vec<_>>()),
            "--expires-at" => {
                let expires_at: u64 = value
                    .parse()
                    .map_err(|_| format!("invalid --expires-at '{value}'"))?;
                claims["exp"] = json!(expires_at);
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KEY_ID.to_owned());
    let key =
        EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).map_err(|error| error.to_string())?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|error| error.to_string())
}
