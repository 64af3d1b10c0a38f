//! Bearer tokens verified by the function itself, for events without an
//! authorizer context: real tokens signed with the test-only keys, against
//! dynalite, through every front end.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use delete_learning_user::config::Config;
use delete_learning_user::handler::App;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::invariants::{Scope, invoke_checked};
use support::jwks_server::JwksServer;
use support::tokens::*;
use support::*;

const LEARNINGS: &[(&str, &str)] = &[
    ("user-a", "user_profile"),
    ("user-a", "entity_memory#acme"),
    ("user-b", "user_profile"),
    ("user-b", "decision_log#1"),
];

/// A seeded table and an app configured by `env` besides LEARNINGS_TABLE.
struct Fixture {
    client: aws_sdk_dynamodb::Client,
    table: String,
    before: Snapshot,
    app: App,
}

async fn fixture_with(env: &[(&str, String)], refetch_interval: Option<Duration>) -> Fixture {
    let client = dynamodb_client();
    let table = unique_table_name("bearer");
    create_table(&client, &table).await;
    put_learnings(&client, &table, LEARNINGS, 100).await;
    let before = snapshot(&client, &table).await;

    let mut variables: HashMap<String, String> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    variables.insert("LEARNINGS_TABLE".to_owned(), table.clone());
    let mut config = Config::from_lookup(|name| variables.get(name).cloned()).unwrap();
    config.deletion = fast_deletion();
    if let (Some(token), Some(interval)) = (config.token.as_mut(), refetch_interval) {
        token.refetch_interval = interval;
    }

    Fixture {
        app: App::new(config, client.clone()),
        client,
        table,
        before,
    }
}

/// An app that verifies RS256 tokens with the main test key's PEM.
async fn pem_fixture() -> Fixture {
    fixture_with(&[("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem"))], None).await
}

impl Fixture {
    async fn after(&self) -> Snapshot {
        snapshot(&self.client, &self.table).await
    }

    /// Sends an event through the handler, and checks the invariants on the
    /// fixture's table. `scope` is None for a request that must be rejected.
    async fn send(&self, event: &Value, scope: Option<&Scope>) -> Value {
        invoke_checked(&self.app, &self.client, &[&self.table], event, scope).await
    }

    /// Returns the scope of a request for all of `user_id`'s learnings.
    fn scope_of(&self, user_id: &str) -> Scope {
        Scope::new(&self.table, user_id, None)
    }

    /// Sends a function-URL request with this Authorization header value, for
    /// a caller who may delete `user_id`'s learnings.
    async fn delete_with_header(&self, user_id: &str, authorization: &str) -> Value {
        let event = function_url_event(user_id, "", Some(authorization));
        self.send(&event, Some(&self.scope_of(user_id))).await
    }

    async fn delete_with_token(&self, user_id: &str, token: &str) -> Value {
        self.delete_with_header(user_id, &format!("Bearer {token}"))
            .await
    }

    /// Sends a function-URL request with this Authorization header value,
    /// which the function must reject, so the check allows no change at all.
    async fn rejected_delete_with_header(&self, user_id: &str, authorization: &str) -> Value {
        let event = function_url_event(user_id, "", Some(authorization));
        self.send(&event, None).await
    }

    async fn rejected_delete_with_token(&self, user_id: &str, token: &str) -> Value {
        self.rejected_delete_with_header(user_id, &format!("Bearer {token}"))
            .await
    }

    /// Asserts a 401 with `detail`, and that the table did not change.
    async fn assert_rejected(&self, response: &Value, detail: &str) {
        assert_eq!(status_of(response), 401, "{response}");
        assert_eq!(
            error_body(response),
            json!({"detail": detail, "error_code": "UNAUTHENTICATED"})
        );
        assert_eq!(self.after().await, self.before);
    }
}

/// Builds a Lambda function URL request (payload 2.0, no authorizer, no path parameters).
fn function_url_event(user_id: &str, raw_query: &str, authorization: Option<&str>) -> Value {
    let mut headers =
        json!({"host": "abcdefghij.lambda-url.us-east-1.on.aws", "user-agent": "curl/8.11.1"});
    if let Some(authorization) = authorization {
        headers["authorization"] = json!(authorization);
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": format!("/learnings/users/{user_id}"),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {"method": "DELETE", "path": format!("/learnings/users/{user_id}"), "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.12", "userAgent": "curl/8.11.1"},
            "requestId": "5b0c5bd4-1b31-4b8e-9a1d-3f7f0c1e2d3a",
            "routeKey": "$default",
            "stage": "$default",
            "time": "04/Dec/2026:20:00:00 +0000",
            "timeEpoch": 1_796_500_800_000_u64
        },
        "isBase64Encoded": false
    })
}

/// Builds an ALB target-group request with multi-value headers off: the path and
/// query arrive still percent-encoded.
fn alb_event(encoded_path: &str, encoded_query: &[(&str, &str)], authorization: &str) -> Value {
    let query: serde_json::Map<String, Value> = encoded_query
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect();
    json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/learnings/0123456789abcdef"}},
        "httpMethod": "DELETE",
        "path": encoded_path,
        "queryStringParameters": query,
        "headers": {"authorization": authorization, "host": "learnings-alb-123.us-east-1.elb.amazonaws.com",
                    "x-forwarded-for": "203.0.113.13", "x-forwarded-port": "443", "x-forwarded-proto": "https"},
        "body": "",
        "isBase64Encoded": false
    })
}

/// Builds a REST API request through a route without an authorizer.
fn rest_event_without_authorizer(user_id: &str, authorization: &str) -> Value {
    let mut event = rest_api_event(user_id, json!({}));
    event["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    event["headers"]["Authorization"] = json!(authorization);
    event["multiValueHeaders"]["Authorization"] = json!([authorization]);
    event
}

#[tokio::test]
async fn own_token_deletes_own_learnings() {
    let fixture = pem_fixture().await;

    let response = fixture
        .delete_with_token("user-a", &sign_rs256(&claims_for("user-a")))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
    assert_eq!(
        fixture.after().await,
        filtered(&fixture.before, |user_id, _| user_id != "user-a")
    );
}

#[tokio::test]
async fn own_token_cannot_delete_others() {
    let fixture = pem_fixture().await;

    let response = fixture
        .rejected_delete_with_token("user-b", &sign_rs256(&claims_for("user-a")))
        .await;

    assert_eq!(status_of(&response), 403);
    assert_eq!(fixture.after().await, fixture.before);
}

#[tokio::test]
async fn admin_scope_token_deletes_others() {
    let fixture = pem_fixture().await;
    let mut claims = claims_for("ops-admin");
    claims["scope"] = json!("openid agent_os:admin");

    let response = fixture
        .delete_with_token("user-b", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
    assert_eq!(
        fixture.after().await,
        filtered(&fixture.before, |user_id, _| user_id != "user-b")
    );
}

#[tokio::test]
async fn admin_group_token_deletes_others() {
    let fixture = pem_fixture().await;
    let mut claims = claims_for("ops-admin");
    claims["cognito:groups"] = json!(["support", "admin"]);

    let response = fixture
        .delete_with_token("user-b", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
    assert_eq!(
        fixture.after().await,
        filtered(&fixture.before, |user_id, _| user_id != "user-b")
    );
}

#[tokio::test]
async fn agentos_style_token_is_accepted() {
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            ("JWT_AUDIENCE", "agentos-prod".to_owned()),
            ("AUTH_REQUIRED_SCOPES", "learnings:delete".to_owned()),
        ],
        None,
    )
    .await;
    let mut claims = claims_for("user-a");
    claims["aud"] = json!("agentos-prod");
    claims["scopes"] = json!(["learnings:delete"]);

    let response = fixture
        .delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
    assert!(sort_keys_of(&fixture.after().await, "user-a").is_empty());
}

#[tokio::test]
async fn agentos_token_without_scope_is_403() {
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            ("AUTH_REQUIRED_SCOPES", "learnings:delete".to_owned()),
        ],
        None,
    )
    .await;
    let mut claims = claims_for("user-a");
    claims["scopes"] = json!(["learnings:read"]);

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 403);
    assert_eq!(fixture.after().await, fixture.before);
}

#[tokio::test]
async fn cognito_access_token_audience_is_client_id() {
    let env = [
        ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
        (
            "JWT_ISSUER",
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example".to_owned(),
        ),
        ("JWT_AUDIENCE", "client-a".to_owned()),
        ("JWT_TOKEN_USE", "access".to_owned()),
    ];
    let fixture = fixture_with(&env, None).await;
    let mut claims = claims_for("user-a");
    claims["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example");
    claims["client_id"] = json!("client-a");
    claims["token_use"] = json!("access");

    let response = fixture
        .delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
}

#[tokio::test]
async fn hs256_shared_secret_is_accepted() {
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", secret.to_owned()),
            ("JWT_ALGORITHMS", "HS256".to_owned()),
        ],
        None,
    )
    .await;

    let response = fixture
        .delete_with_token(
            "user-a",
            &sign_hs256(&claims_for("user-a"), secret.as_bytes()),
        )
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
}

#[tokio::test]
async fn es256_token_verifies_with_jwks_file() {
    let jwks_file = std::env::temp_dir().join(format!("{}.jwks.json", unique_table_name("jwks")));
    std::fs::write(
        &jwks_file,
        jwks(&[
            ("rsa", Algorithm::RS256, "rsa-1"),
            ("ec", Algorithm::ES256, "ec-1"),
        ])
        .to_string(),
    )
    .unwrap();
    let fixture = fixture_with(
        &[
            ("JWT_JWKS_FILE", jwks_file.to_string_lossy().into_owned()),
            ("JWT_ALGORITHMS", "RS256,ES256".to_owned()),
        ],
        None,
    )
    .await;

    let ec_token = sign(&claims_for("user-a"), "ec", Algorithm::ES256, Some("ec-1"));
    let rsa_token = sign(
        &claims_for("user-b"),
        "rsa",
        Algorithm::RS256,
        Some("rsa-1"),
    );
    let ec_response = fixture.delete_with_token("user-a", &ec_token).await;
    let rsa_response = fixture.delete_with_token("user-b", &rsa_token).await;

    assert_eq!(status_of(&ec_response), 204, "{ec_response}");
    assert_eq!(status_of(&rsa_response), 204, "{rsa_response}");
    assert!(fixture.after().await.is_empty());
    std::fs::remove_file(jwks_file).unwrap();
}

#[tokio::test]
async fn inline_jwks_rejects_kid_with_other_algorithm() {
    let inline = jwks(&[
        ("rsa", Algorithm::RS256, "rsa-1"),
        ("ec", Algorithm::ES256, "ec-1"),
    ])
    .to_string();
    let fixture = fixture_with(
        &[
            ("JWT_JWKS", inline),
            ("JWT_ALGORITHMS", "RS256,ES256".to_owned()),
        ],
        None,
    )
    .await;

    // Signed with the EC key, but naming the RSA key's kid.
    let token = sign(&claims_for("user-a"), "ec", Algorithm::ES256, Some("rsa-1"));
    let response = fixture.rejected_delete_with_token("user-a", &token).await;

    fixture
        .assert_rejected(&response, "Token algorithm is not allowed")
        .await;
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let fixture = pem_fixture().await;
    let claims = json!({"sub": "user-a", "iat": now() - 3600, "exp": now() - 60});

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    fixture
        .assert_rejected(&response, "Token has expired")
        .await;
}

#[tokio::test]
async fn expiry_within_leeway_is_accepted() {
    let fixture = pem_fixture().await;
    let claims = json!({"sub": "user-a", "iat": now() - 3600, "exp": now() - 5});

    let response = fixture
        .delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
}

#[tokio::test]
async fn future_nbf_is_rejected() {
    let fixture = pem_fixture().await;
    let mut claims = claims_for("user-a");
    claims["nbf"] = json!(now() + 120);

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    fixture
        .assert_rejected(&response, "Token is not valid yet")
        .await;
}

#[tokio::test]
async fn token_without_exp_is_rejected() {
    let fixture = pem_fixture().await;

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&json!({"sub": "user-a"})))
        .await;

    fixture
        .assert_rejected(&response, "Token has no expiration time (exp)")
        .await;
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let fixture = pem_fixture().await;

    let token = sign(
        &claims_for("user-a"),
        "other-rsa",
        Algorithm::RS256,
        Some("rsa-1"),
    );
    let response = fixture.rejected_delete_with_token("user-a", &token).await;

    fixture
        .assert_rejected(&response, "Invalid token signature")
        .await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let fixture = pem_fixture().await;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims_for("user-a").to_string());

    let response = fixture
        .rejected_delete_with_token("user-a", &format!("{header}.{payload}."))
        .await;

    fixture.assert_rejected(&response, "Malformed token").await;
}

#[tokio::test]
async fn hs256_with_rsa_public_key_is_rejected() {
    let fixture = pem_fixture().await;

    // Algorithm confusion: an HS256 MAC keyed with the bytes of the configured RSA public key.
    let token = sign_hs256(&claims_for("user-a"), key_pem("rsa-public.pem").as_bytes());
    let response = fixture.rejected_delete_with_token("user-a", &token).await;

    fixture
        .assert_rejected(&response, "Token algorithm is not allowed")
        .await;
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            (
                "JWT_ISSUER",
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example".to_owned(),
            ),
        ],
        None,
    )
    .await;
    let mut claims = claims_for("user-a");
    claims["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other");

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    fixture
        .assert_rejected(&response, "Invalid token issuer")
        .await;
}

#[tokio::test]
async fn missing_or_odd_issuer_is_rejected() {
    let issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example";
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            ("JWT_ISSUER", issuer.to_owned()),
        ],
        None,
    )
    .await;
    let odd_issuers = [
        None,
        Some(json!(null)),
        Some(json!(123)),
        Some(json!([issuer])),
        Some(json!(["https://other.example", issuer])),
    ];

    for iss in odd_issuers {
        let mut claims = claims_for("user-a");
        if let Some(iss) = &iss {
            claims["iss"] = iss.clone();
        }
        let response = fixture
            .rejected_delete_with_token("user-a", &sign_rs256(&claims))
            .await;
        assert_eq!(
            error_body(&response)["detail"],
            "Invalid token issuer",
            "iss {iss:?}"
        );
        fixture
            .assert_rejected(&response, "Invalid token issuer")
            .await;
    }
}

#[tokio::test]
async fn other_app_client_is_rejected() {
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            ("JWT_AUDIENCE", "client-a".to_owned()),
        ],
        None,
    )
    .await;
    let mut claims = claims_for("user-a");
    claims["client_id"] = json!("client-b");
    claims["token_use"] = json!("access");

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    fixture
        .assert_rejected(&response, "Invalid token audience")
        .await;
}

#[tokio::test]
async fn id_token_is_rejected_for_access_use() {
    let fixture = fixture_with(
        &[
            ("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem")),
            ("JWT_TOKEN_USE", "access".to_owned()),
        ],
        None,
    )
    .await;
    let mut claims = claims_for("user-a");
    claims["token_use"] = json!("id");

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims))
        .await;

    fixture
        .assert_rejected(&response, "Invalid token use: expected an access token")
        .await;
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let fixture = pem_fixture().await;

    for token in ["abc", "a.b.c", "a.b", "...", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        let response = fixture.rejected_delete_with_token("user-a", token).await;
        fixture.assert_rejected(&response, "Malformed token").await;
    }
    let spaced = fixture
        .rejected_delete_with_header("user-a", "Bearer one two")
        .await;
    fixture.assert_rejected(&spaced, "Malformed token").await;
    let empty = fixture
        .rejected_delete_with_header("user-a", "Bearer ")
        .await;
    fixture.assert_rejected(&empty, "Malformed token").await;
}

#[tokio::test]
async fn other_schemes_are_rejected() {
    let fixture = pem_fixture().await;

    for header in [
        "Basic dXNlci1hOnNlY3JldA==",
        "Token abc",
        "Bearer",
        "bearer ",
    ] {
        let response = fixture.rejected_delete_with_header("user-a", header).await;
        assert_eq!(status_of(&response), 401, "{header}");
        assert_eq!(
            error_body(&response)["error_code"],
            "UNAUTHENTICATED",
            "{header}"
        );
    }
    let basic = fixture
        .rejected_delete_with_header("user-a", "Basic dXNlci1hOnNlY3JldA==")
        .await;
    fixture
        .assert_rejected(&basic, "Authorization header must use the Bearer scheme")
        .await;
}

#[tokio::test]
async fn lowercase_bearer_scheme_is_accepted() {
    let fixture = pem_fixture().await;

    let response = fixture
        .delete_with_header(
            "user-a",
            &format!("bearer {}", sign_rs256(&claims_for("user-a"))),
        )
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
}

#[tokio::test]
async fn two_authorization_headers_are_rejected() {
    let fixture = pem_fixture().await;
    let token = sign_rs256(&claims_for("user-a"));

    let mut rest = rest_event_without_authorizer("user-a", &format!("Bearer {token}"));
    rest["multiValueHeaders"]["Authorization"] =
        json!([format!("Bearer {token}"), format!("Bearer {token}")]);
    let joined = function_url_event(
        "user-a",
        "",
        Some(&format!("Bearer {token},Bearer {token}")),
    );

    for event in [rest, joined] {
        let response = fixture.send(&event, None).await;
        fixture
            .assert_rejected(&response, "Only one Authorization header is allowed")
            .await;
    }
}

#[tokio::test]
async fn rejected_token_detail_never_echoes_it() {
    let fixture = pem_fixture().await;
    let token = sign(
        &claims_for("user-a"),
        "other-rsa",
        Algorithm::RS256,
        Some("rsa-1"),
    );

    let response = fixture.rejected_delete_with_token("user-a", &token).await;

    let body = response["body"].as_str().unwrap();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!body.contains(signature));
    assert!(!body.contains(&token[..20]));
}

#[tokio::test]
async fn no_key_source_means_401() {
    let fixture = fixture_with(&[], None).await;

    let response = fixture
        .rejected_delete_with_token("user-a", &sign_rs256(&claims_for("user-a")))
        .await;

    fixture
        .assert_rejected(
            &response,
            "Unauthenticated access: the request carries no authorizer identity, and Authorization headers \
             are not trusted because no JWT key source is configured",
        )
        .await;
}

#[tokio::test]
async fn authorizer_context_beats_garbage_token() {
    let fixture = pem_fixture().await;
    let mut event = delete_by(json!({"sub": "user-a"}), "user-a", "");
    event["headers"]["authorization"] = json!("Bearer not-a-token");

    let response = fixture
        .send(&event, Some(&fixture.scope_of("user-a")))
        .await;

    assert_eq!(status_of(&response), 204, "{response}");
    assert!(sort_keys_of(&fixture.after().await, "user-a").is_empty());
}

#[tokio::test]
async fn admin_token_never_upgrades_authorizer() {
    let fixture = pem_fixture().await;
    let mut admin_claims = claims_for("ops-admin");
    admin_claims["scope"] = json!("agent_os:admin");
    let mut event = delete_by(json!({"sub": "user-a"}), "user-b", "");
    event["headers"]["authorization"] = json!(format!("Bearer {}", sign_rs256(&admin_claims)));

    let response = fixture.send(&event, None).await;

    assert_eq!(status_of(&response), 403);
    assert_eq!(fixture.after().await, fixture.before);
}

#[tokio::test]
async fn every_front_end_behaves_the_same() {
    let authorization = format!("Bearer {}", sign_rs256(&claims_for("idp|user-c")));
    let encoded = "idp%7Cuser-c";
    let events = [
        (
            "rest api",
            rest_event_without_authorizer(encoded, &authorization),
        ),
        ("http api", {
            let mut event = http_api_event(
                &format!("/learnings/users/{encoded}"),
                "learning_type=entity_memory",
                Some("idp|user-c"),
                None,
            );
            event["headers"]["authorization"] = json!(authorization);
            event
        }),
        (
            "function url",
            function_url_event(encoded, "learning_type=entity_memory", Some(&authorization)),
        ),
        (
            "alb",
            alb_event(
                &format!("/learnings/users/{encoded}"),
                &[("learning_type", "entity%5Fmemory")],
                &authorization,
            ),
        ),
    ];

    for (front_end, event) in events {
        let fixture =
            fixture_with(&[("JWT_VERIFICATION_KEY", key_pem("rsa-public.pem"))], None).await;
        put_learnings(
            &fixture.client,
            &fixture.table,
            &[
                ("idp|user-c", "entity_memory#acme"),
                ("idp|user-c", "user_profile"),
                ("idp%7Cuser-c", "entity_memory#acme"),
            ],
            100,
        )
        .await;
        let before = fixture.after().await;
        let by_type = front_end != "rest api";
        let learning_type = by_type.then_some("entity_memory");
        let scope = Scope::new(&fixture.table, "idp|user-c", learning_type);

        let response = fixture.send(&event, Some(&scope)).await;

        assert_eq!(status_of(&response), 204, "{front_end}: {response}");
        let expected = filtered(&before, |user_id, sort_key| {
            user_id != "idp|user-c" || (by_type && !sort_key.starts_with("entity_memory"))
        });
        assert_eq!(fixture.after().await, expected, "{front_end}");
        if front_end == "alb" {
            assert_eq!(response["statusDescription"], "204 No Content");
        }
    }
}

#[tokio::test]
async fn jwks_url_is_fetched_once_and_cached() {
    let server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let fixture = fixture_with(&[("JWT_JWKS_URL", server.url.clone())], None).await;
    assert_eq!(server.fetches(), 0, "no fetch before the first token");

    let first = fixture
        .delete_with_token("user-a", &sign_rs256(&claims_for("user-a")))
        .await;
    let second = fixture
        .delete_with_token("user-b", &sign_rs256(&claims_for("user-b")))
        .await;

    assert_eq!(status_of(&first), 204, "{first}");
    assert_eq!(status_of(&second), 204, "{second}");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_a_minute() {
    let server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let fixture = fixture_with(&[("JWT_JWKS_URL", server.url.clone())], None).await;
    let known = fixture
        .delete_with_token("user-b", &sign_rs256(&claims_for("user-b")))
        .await;
    assert_eq!(status_of(&known), 204);

    for _ in 0..3 {
        let token = sign(
            &claims_for("user-a"),
            "rsa",
            Algorithm::RS256,
            Some("rotated"),
        );
        let response = fixture.rejected_delete_with_token("user-a", &token).await;
        assert_eq!(status_of(&response), 401);
        assert_eq!(error_body(&response)["detail"], "Unknown token signing key");
    }

    assert_eq!(server.fetches(), 1);
    assert_eq!(
        sort_keys_of(&fixture.after().await, "user-a"),
        ["entity_memory#acme", "user_profile"]
    );
}

#[tokio::test]
async fn rotated_key_is_found_by_refetch() {
    let server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let fixture = fixture_with(
        &[("JWT_JWKS_URL", server.url.clone())],
        Some(Duration::ZERO),
    )
    .await;
    let first = fixture
        .delete_with_token("user-b", &sign_rs256(&claims_for("user-b")))
        .await;
    assert_eq!(status_of(&first), 204);

    server.serve(
        200,
        &jwks(&[
            ("rsa", Algorithm::RS256, "rsa-1"),
            ("other-rsa", Algorithm::RS256, "rsa-2"),
        ])
        .to_string(),
    );
    let token = sign(
        &claims_for("user-a"),
        "other-rsa",
        Algorithm::RS256,
        Some("rsa-2"),
    );
    let rotated = fixture.delete_with_token("user-a", &token).await;

    assert_eq!(status_of(&rotated), 204, "{rotated}");
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_after_refetch_is_rejected() {
    let server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let fixture = fixture_with(
        &[("JWT_JWKS_URL", server.url.clone())],
        Some(Duration::ZERO),
    )
    .await;

    let token = sign(
        &claims_for("user-a"),
        "rsa",
        Algorithm::RS256,
        Some("nobody-knows"),
    );
    let response = fixture.rejected_delete_with_token("user-a", &token).await;

    fixture
        .assert_rejected(&response, "Unknown token signing key")
        .await;
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn unavailable_jwks_url_gives_500_until_it_recovers() {
    let server = JwksServer::start(&json!({}));
    server.serve(503, "unavailable");
    let fixture = fixture_with(&[("JWT_JWKS_URL", server.url.clone())], None).await;
    let token = sign_rs256(&claims_for("user-a"));

    for _ in 0..2 {
        let response = fixture.rejected_delete_with_token("user-a", &token).await;
        assert_eq!(status_of(&response), 500, "{response}");
        assert_eq!(error_body(&response)["error_code"], "INTERNAL_SERVER_ERROR");
        assert_eq!(fixture.after().await, fixture.before);
    }
    server.serve(
        200,
        &jwks(&[("rsa", Algorithm::RS256, "rsa-1")]).to_string(),
    );
    let recovered = fixture.delete_with_token("user-a", &token).await;

    assert_eq!(status_of(&recovered), 204, "{recovered}");
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn failed_refetch_keeps_cached_keys() {
    let server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let fixture = fixture_with(
        &[("JWT_JWKS_URL", server.url.clone())],
        Some(Duration::ZERO),
    )
    .await;
    let first = fixture
        .delete_with_token("user-b", &sign_rs256(&claims_for("user-b")))
        .await;
    assert_eq!(status_of(&first), 204);

    server.serve(503, "unavailable");
    let unknown = sign(
        &claims_for("user-a"),
        "rsa",
        Algorithm::RS256,
        Some("rotated"),
    );
    let during_outage = fixture.rejected_delete_with_token("user-a", &unknown).await;
    let known = fixture
        .delete_with_token("user-a", &sign_rs256(&claims_for("user-a")))
        .await;

    assert_eq!(status_of(&during_outage), 401);
    assert_eq!(status_of(&known), 204, "{known}");
    assert_eq!(server.fetches(), 2);
}
