//! Identity: who is calling, read from the API Gateway authorizer context.
//!
//! [`caller_from_context`] is a pure function of the event's `requestContext`.
//! It takes the first authorizer shape that is present, in this order:
//!
//! 1. HTTP API JWT authorizer: `authorizer.jwt.claims` and `authorizer.jwt.scopes`;
//! 2. REST API Cognito user-pool authorizer: `authorizer.claims`;
//! 3. Lambda authorizer: `authorizer.lambda` (HTTP API), or the fields of
//!    `authorizer` beside `principalId` (REST API);
//! 4. IAM: `authorizer.iam` (HTTP API, function URL) or `identity.userArn` (REST API).
//!
//! Presence is decided by the key alone: a JWT context whose claims are
//! missing or malformed is still a JWT caller, only one without a user id, so
//! it can never fall through to a more trusted shape.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The authorizer that vouched for a caller with claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizerKind {
    Jwt,
    CognitoUserPool,
    Lambda,
    /// A Bearer token that the function verified itself.
    BearerToken,
}

impl AuthorizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::CognitoUserPool => "cognito_user_pool",
            Self::Lambda => "lambda",
            Self::BearerToken => "bearer_token",
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person or client identified by claims.
    Claims(Claims),
    /// An AWS principal signed in with SigV4, such as another service's role.
    Iam { principal: String },
    /// No identity at all, allowed only by the AUTH_ALLOW_ANONYMOUS switch.
    Anonymous,
}

/// The parts of a caller's claims that the policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub authorizer: AuthorizerKind,
    /// The value of the user id claim, when it is a non-empty string.
    pub user_id: Option<String>,
    pub scopes: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

impl Caller {
    /// Returns the id to log for this caller: its user id, or its IAM principal.
    pub fn caller_id(&self) -> Option<&str> {
        match self {
            Self::Claims(claims) => claims.user_id.as_deref(),
            Self::Iam { principal } => Some(principal),
            Self::Anonymous => None,
        }
    }

    /// Returns where the identity came from, for the log line.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Claims(claims) => claims.authorizer.as_str(),
            Self::Iam { .. } => "iam",
            Self::Anonymous => "anonymous",
        }
    }
}

/// The claim that carries Cognito groups.
const GROUPS_CLAIM: &str = "cognito:groups";

/// Reads the caller from `requestContext`, or returns None when no authorizer
/// shape is present.
pub fn caller_from_context(
    request_context: Option<&Map<String, Value>>,
    user_id_claim: &str,
) -> Option<Caller> {
    let context = request_context?;
    let authorizer = context.get("authorizer").and_then(Value::as_object);

    if let Some(authorizer) = authorizer {
        if let Some(jwt) = authorizer.get("jwt") {
            let claims = jwt.get("claims").and_then(Value::as_object);
            let scopes = jwt.get("scopes").map(string_list).unwrap_or_default();
            return Some(claims_caller(
                AuthorizerKind::Jwt,
                claims,
                scopes,
                user_id_claim,
            ));
        }

        // HTTP APIs with payload format 1.0 deliver JWT claims here too, with `scopes` beside them.
        if let Some(claims) = authorizer.get("claims") {
            let claims = claims.as_object();
            let scopes = authorizer
                .get("scopes")
                .map(string_list)
                .unwrap_or_default();
            return Some(claims_caller(
                AuthorizerKind::CognitoUserPool,
                claims,
                scopes,
                user_id_claim,
            ));
        }

        if let Some(lambda_context) = authorizer.get("lambda") {
            let claims = lambda_context.as_object();
            return Some(claims_caller(
                AuthorizerKind::Lambda,
                claims,
                Vec::new(),
                user_id_claim,
            ));
        }

        if authorizer.contains_key("principalId") {
            return Some(claims_caller(
                AuthorizerKind::Lambda,
                Some(authorizer),
                Vec::new(),
                user_id_claim,
            ));
        }

        // An IAM caller is unscoped, so it counts only with a named principal.
        let iam_principal = authorizer.get("iam").and_then(|iam| {
            ["userArn", "callerId", "userId"]
                .iter()
                .find_map(|key| non_empty_str(iam.get(*key)))
        });
        if let Some(principal) = iam_principal {
            return Some(Caller::Iam {
                principal: principal.to_owned(),
            });
        }
    }

    let user_arn = context
        .get("identity")
        .and_then(|identity| non_empty_str(identity.get("userArn")));
    user_arn.map(|principal| Caller::Iam {
        principal: principal.to_owned(),
    })
}

/// Builds the caller of a verified Bearer token, read with the same claim
/// names as an authorizer's claims.
pub fn caller_from_token_claims(claims: &Map<String, Value>, user_id_claim: &str) -> Caller {
    claims_caller(
        AuthorizerKind::BearerToken,
        Some(claims),
        Vec::new(),
        user_id_claim,
    )
}

fn claims_caller(
    authorizer: AuthorizerKind,
    claims: Option<&Map<String, Value>>,
    authorizer_scopes: Vec<String>,
    user_id_claim: &str,
) -> Caller {
    let empty = Map::new();
    let claims = claims.unwrap_or(&empty);

    let mut scopes: BTreeSet<String> = authorizer_scopes.into_iter().collect();
    if let Some(scope) = claims.get("scope") {
        // OAuth 2.0 `scope` is space-separated; a comma may be part of a scope.
        match scope {
            Value::String(scope) => scopes.extend(scope.split_whitespace().map(str::to_owned)),
            other => scopes.extend(string_list(other)),
        }
    }
    if let Some(listed) = claims.get("scopes") {
        scopes.extend(string_list(listed));
    }

    let groups = claims
        .get(GROUPS_CLAIM)
        .map(string_list)
        .unwrap_or_default();

    Caller::Claims(Claims {
        authorizer,
        user_id: non_empty_str(claims.get(user_id_claim)).map(str::to_owned),
        scopes,
        groups: groups.into_iter().collect(),
    })
}

/// Reads a list claim in any of the shapes that authorizers deliver:
/// a JSON array, a JSON array in a string (`["admin","users"]`), the
/// bracketed form HTTP APIs render arrays as (`[admin users]`), or a comma-
/// or space-separated string (`admin,users`). Anything else is an empty list.
pub fn string_list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::String(text) => split_list_string(text),
        _ => Vec::new(),
    }
}

fn split_list_string(text: &str) -> Vec<String> {
    let text = text.trim();

    if text.starts_with('[')
        && let Ok(items) = serde_json::from_str::<Vec<String>>(text)
    {
        return items
            .into_iter()
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect();
    }

    let inner = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    inner
        .split(|character: char| character == ',' || character.is_whitespace())
        .map(|item| item.trim_matches(|character| character == '"' || character == '\''))
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn caller(context: Value) -> Option<Caller> {
        caller_from_context(context.as_object(), "sub")
    }

    fn claims(context: Value) -> Claims {
        match caller(context) {
            Some(Caller::Claims(claims)) => claims,
            other => panic!("expected claims, got {other:?}"),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn jwt_claims_and_scopes_are_read() {
        let claims = claims(json!({"authorizer": {"jwt": {
            "claims": {"sub": "user-a", "scope": "openid learnings:delete"},
            "scopes": ["agent_os:admin"]
        }}}));

        assert_eq!(claims.authorizer, AuthorizerKind::Jwt);
        assert_eq!(claims.user_id.as_deref(), Some("user-a"));
        assert_eq!(
            claims.scopes,
            set(&["agent_os:admin", "learnings:delete", "openid"])
        );
    }

    #[test]
    fn null_jwt_scopes_are_empty() {
        let claims =
            claims(json!({"authorizer": {"jwt": {"claims": {"sub": "user-a"}, "scopes": null}}}));

        assert!(claims.scopes.is_empty());
    }

    #[test]
    fn cognito_claims_are_read() {
        let claims = claims(
            json!({"authorizer": {"claims": {"sub": "idp|user-c", "cognito:groups": "admin,users"}}}),
        );

        assert_eq!(claims.authorizer, AuthorizerKind::CognitoUserPool);
        assert_eq!(claims.user_id.as_deref(), Some("idp|user-c"));
        assert_eq!(claims.groups, set(&["admin", "users"]));
    }

    #[test]
    fn payload_v1_jwt_scopes_are_read() {
        let claims =
            claims(json!({"authorizer": {"claims": {"sub": "ops"}, "scopes": ["agent_os:admin"]}}));

        assert_eq!(claims.scopes, set(&["agent_os:admin"]));
    }

    #[test]
    fn lambda_authorizer_contexts_are_read() {
        let http_api = claims(
            json!({"authorizer": {"lambda": {"sub": "user-a", "scopes": "learnings:delete"}}}),
        );
        let rest_api = claims(
            json!({"authorizer": {"principalId": "user-a", "sub": "user-a", "integrationLatency": 3}}),
        );

        assert_eq!(http_api.authorizer, AuthorizerKind::Lambda);
        assert_eq!(http_api.user_id.as_deref(), Some("user-a"));
        assert_eq!(http_api.scopes, set(&["learnings:delete"]));
        assert_eq!(rest_api.authorizer, AuthorizerKind::Lambda);
        assert_eq!(rest_api.user_id.as_deref(), Some("user-a"));
    }

    #[test]
    fn iam_callers_are_unscoped_principals() {
        let http_api = caller(
            json!({"authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:role/eraser"}}}),
        );
        let rest_api = caller(
            json!({"identity": {"userArn": "arn:aws:iam::123456789012:user/ops", "sourceIp": "203.0.113.9"}}),
        );

        assert_eq!(
            http_api,
            Some(Caller::Iam {
                principal: "arn:aws:iam::123456789012:role/eraser".to_owned()
            })
        );
        assert_eq!(
            rest_api,
            Some(Caller::Iam {
                principal: "arn:aws:iam::123456789012:user/ops".to_owned()
            })
        );
    }

    #[test]
    fn iam_without_principal_is_no_identity() {
        for iam in [json!(null), json!({}), json!({"userArn": ""}), json!("arn")] {
            assert_eq!(caller(json!({"authorizer": {"iam": iam}})), None, "{iam}");
        }
    }

    #[test]
    fn jwt_takes_precedence_over_iam() {
        let caller = caller(json!({
            "authorizer": {"jwt": {"claims": {"sub": "user-a"}, "scopes": null}},
            "identity": {"userArn": "arn:aws:iam::123456789012:user/ops"}
        }));

        assert!(matches!(caller, Some(Caller::Claims(_))));
    }

    #[test]
    fn malformed_jwt_context_has_no_user_id() {
        for context in [
            json!({"authorizer": {"jwt": null}}),
            json!({"authorizer": {"jwt": {"claims": "sub=user-a"}}}),
            json!({"authorizer": {"jwt": {"claims": {"sub": 42}}}}),
            json!({"authorizer": {"jwt": {"claims": {"sub": ""}}}}),
        ] {
            let claims = claims(context.clone());
            assert_eq!(claims.user_id, None, "{context}");
        }
    }

    #[test]
    fn no_authorizer_is_none() {
        assert_eq!(caller(json!({})), None);
        assert_eq!(
            caller(json!({"identity": {"userArn": null, "sourceIp": "203.0.113.9"}})),
            None
        );
        assert_eq!(caller_from_context(None, "sub"), None);
    }

    #[test]
    fn configured_user_id_claim_is_used() {
        let context =
            json!({"authorizer": {"jwt": {"claims": {"sub": "uuid-1", "username": "alice"}}}});

        let caller = caller_from_context(context.as_object(), "username");

        assert_eq!(
            caller.and_then(|caller| caller.caller_id().map(str::to_owned)),
            Some("alice".to_owned())
        );
    }

    #[test]
    fn group_formats_are_parsed() {
        let cases = [
            (json!("admin"), vec!["admin"]),
            (json!("admin,users"), vec!["admin", "users"]),
            (json!("[admin users]"), vec!["admin", "users"]),
            (json!("[superadmin users]"), vec!["superadmin", "users"]),
            (json!(r#"["admin","users"]"#), vec!["admin", "users"]),
            (json!(["admin", "users"]), vec!["admin", "users"]),
            (json!("[]"), vec![]),
            (json!(""), vec![]),
            (json!(42), vec![]),
            (json!(null), vec![]),
        ];

        for (value, expected) in cases {
            assert_eq!(string_list(&value), expected, "{value}");
        }
    }
}
