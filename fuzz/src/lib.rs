//! The steps of `handler::handle` that run before any network call, from a
//! Lambda event to a validated request and its table, with the properties
//! that their outcome must have.
//!
//! The fuzz target and tests/fuzz_regressions.rs both call [`check_input`].
//! The steps are the handler's, in its order, with no Bearer-token verifier:
//! verifying a token needs a configured key source, and a JWKS URL would be a
//! network call. tests/fuzz_regressions.rs compares the statuses returned here
//! with the real handler's on every seed and regression input, which catches
//! this copy of the chain drifting from the handler.

use std::sync::LazyLock;

use delete_learning_user::config::AuthConfig;
use delete_learning_user::errors::ApiError;
use delete_learning_user::event::HttpEvent;
use delete_learning_user::identity::{self, AuthorizerKind, Caller};
use delete_learning_user::policy::{self, CallerKind};
use delete_learning_user::request::{
    self, DeleteRequest, MAX_LEARNING_TYPE_BYTES, MAX_USER_ID_BYTES, RECORD_SEPARATOR,
};
use delete_learning_user::tables::TableCatalog;
use serde_json::Value;

/// The size limit of an error body, in bytes, as in tests/bad_input_corpus.rs.
/// The handler shortens request values before it echoes them, so that no input
/// should make a body reach it.
const MAX_ERROR_BODY_BYTES: usize = 1_000;

/// The configuration the chain runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthConfig,
    pub tables: TableCatalog,
}

/// The default policy, and a catalog with a default table and two databases,
/// so that every branch of `TableCatalog::resolve` is reachable.
pub static SETTINGS: LazyLock<Settings> = LazyLock::new(|| Settings {
    auth: AuthConfig::default(),
    tables: TableCatalog::from_env_values(
        Some("agno_learnings"),
        Some(r#"{"main": ["agno_learnings", "agno_learnings_archive"], "eu": ["learnings_eu"]}"#),
    )
    .expect("the fuzzing table catalog is valid"),
});

/// The step of the chain that rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Parse,
    Route,
    Identity,
    Validate,
    Policy,
    Table,
}

impl Step {
    /// Returns the statuses that this step documents for its rejections.
    fn statuses(self) -> &'static [u16] {
        match self {
            Self::Parse => &[400],
            Self::Route => &[404, 405],
            Self::Identity => &[401],
            Self::Validate => &[422],
            Self::Policy => &[403],
            Self::Table => &[400, 404],
        }
    }
}

/// A request that passed every step, and would go on to the deletion.
#[derive(Debug)]
pub struct Accepted<'e, 's> {
    pub method: &'e str,
    pub caller: Caller,
    pub kind: CallerKind,
    pub request: DeleteRequest,
    pub table: &'s str,
}

/// A request that a step rejected, with the error the client would see.
#[derive(Debug)]
pub struct Rejected {
    pub step: Step,
    pub error: ApiError,
}

/// Runs the bytes of a Lambda payload through the chain and checks the outcome.
///
/// Returns None for bytes that are not JSON, because lambda_runtime rejects
/// such a payload before the handler runs. Otherwise returns the status that
/// the handler would respond with, 204 for an accepted request.
///
/// # Panics
/// When the outcome breaks one of the properties in [`check_outcome`].
pub fn check_input(data: &[u8]) -> Option<u16> {
    let event: Value = serde_json::from_slice(data).ok()?;
    let outcome = run_chain(&event, &SETTINGS);
    Some(check_outcome(&event, &outcome, &SETTINGS))
}

/// Runs the handler's steps up to the first DynamoDB call.
pub fn run_chain<'e, 's>(
    event: &'e Value,
    settings: &'s Settings,
) -> Result<Accepted<'e, 's>, Rejected> {
    let reject = |step| move |error| Rejected { step, error };

    let http = HttpEvent::parse(event).map_err(|not_http| Rejected {
        step: Step::Parse,
        error: ApiError::BadRequest(format!("Invalid event: {not_http}")),
    })?;
    let user_id = request::route(&http).map_err(reject(Step::Route))?;
    let caller = authenticate(&http, &settings.auth).map_err(reject(Step::Identity))?;
    let request = request::validate(user_id, &http.query).map_err(reject(Step::Validate))?;
    let kind = policy::authorize(&caller, &request.user_id, &settings.auth)
        .map_err(reject(Step::Policy))?;
    let table = settings
        .tables
        .resolve(request.db_id.as_deref(), request.table.as_deref())
        .map_err(reject(Step::Table))?;

    Ok(Accepted {
        method: http.method,
        caller,
        kind,
        request,
        table,
    })
}

/// Reads the caller as the handler does without a Bearer-token verifier: from
/// the authorizer context, else anonymous when that is allowed, else a 401.
fn authenticate(http: &HttpEvent<'_>, auth: &AuthConfig) -> Result<Caller, ApiError> {
    if let Some(caller) = identity::caller_from_context(http.request_context, &auth.user_id_claim) {
        return Ok(caller);
    }
    if auth.allow_anonymous {
        return Ok(Caller::Anonymous);
    }
    Err(ApiError::Unauthenticated(
        "the request carries no authorizer identity".to_owned(),
    ))
}

/// Checks the properties of an outcome and returns its HTTP status.
///
/// A rejection has a status that its step documents, a non-empty error code
/// and detail, and a short body. An accepted request has the DELETE method, a
/// user id and a learning type within the documented limits, and a table from
/// the catalog. Its caller kind is the one that the claims call for, and a
/// scoped caller's target is the caller's own user id.
///
/// # Panics
/// When a property does not hold.
pub fn check_outcome(
    event: &Value,
    outcome: &Result<Accepted, Rejected>,
    settings: &Settings,
) -> u16 {
    match outcome {
        Ok(accepted) => {
            check_accepted(event, accepted, settings);
            204
        }
        Err(rejected) => check_rejected(rejected),
    }
}

fn check_rejected(Rejected { step, error }: &Rejected) -> u16 {
    let status = error.status();
    assert!(
        step.statuses().contains(&status),
        "{step:?} rejected with status {status}, not one of {:?}: {error}",
        step.statuses()
    );
    assert!(!error.error_code().is_empty(), "{step:?}: empty error_code");
    assert!(!error.detail("").is_empty(), "{step:?}: empty detail");

    let body_bytes = error.body("fuzz").to_string().len();
    assert!(
        body_bytes < MAX_ERROR_BODY_BYTES,
        "{step:?}: the error body is {body_bytes} bytes, at or over the limit of {MAX_ERROR_BODY_BYTES}"
    );
    status
}

fn check_accepted(event: &Value, accepted: &Accepted, settings: &Settings) {
    let Accepted {
        method,
        caller,
        kind,
        request,
        table,
    } = accepted;

    assert_eq!(*method, "DELETE", "accepted a {method} request");
    check_user_id(&request.user_id);
    if let Some(learning_type) = &request.learning_type {
        check_learning_type(learning_type);
    }
    assert_ne!(
        request.db_id.as_deref(),
        Some(""),
        "accepted an empty db_id"
    );
    assert_ne!(
        request.table.as_deref(),
        Some(""),
        "accepted an empty table"
    );
    assert!(
        settings.tables.all_tables().contains(table),
        "resolved table {table:?} is not in the catalog"
    );

    check_authorizer_precedence(event, caller);
    check_caller_kind(caller, *kind, &request.user_id, &settings.auth);
}

fn check_user_id(user_id: &str) {
    assert!(!user_id.is_empty(), "accepted an empty user id");
    assert!(
        user_id.len() <= MAX_USER_ID_BYTES,
        "accepted a user id of {} bytes",
        user_id.len()
    );
    assert!(
        !user_id.chars().any(char::is_control),
        "accepted a user id with a control character: {user_id:?}"
    );
}

fn check_learning_type(learning_type: &str) {
    assert!(!learning_type.is_empty(), "accepted an empty learning type");
    assert!(
        learning_type.len() <= MAX_LEARNING_TYPE_BYTES,
        "accepted a learning type of {} bytes",
        learning_type.len()
    );
    assert!(
        !learning_type.contains(RECORD_SEPARATOR),
        "accepted a learning type with {RECORD_SEPARATOR:?}: {learning_type:?}"
    );
    assert!(
        !learning_type.chars().any(char::is_control),
        "accepted a learning type with a control character: {learning_type:?}"
    );
}

/// Checks that a JWT or Cognito authorizer key decides the caller's kind even
/// when its claims are malformed, so that such a caller cannot fall through to
/// a more trusted shape such as IAM.
fn check_authorizer_precedence(event: &Value, caller: &Caller) {
    let Some(authorizer) = event
        .pointer("/requestContext/authorizer")
        .and_then(Value::as_object)
    else {
        return;
    };

    let expected = if authorizer.contains_key("jwt") {
        AuthorizerKind::Jwt
    } else if authorizer.contains_key("claims") {
        AuthorizerKind::CognitoUserPool
    } else {
        return;
    };
    assert!(
        matches!(caller, Caller::Claims(claims) if claims.authorizer == expected),
        "an authorizer with {expected:?} claims gave the caller {caller:?}"
    );
}

/// Restates the policy from the caller's claims alone: admins may delete any
/// user's learnings, a caller without a user id none, and, with user
/// isolation on, any other caller only their own.
fn check_caller_kind(caller: &Caller, kind: CallerKind, target: &str, auth: &AuthConfig) {
    let claims = match caller {
        Caller::Claims(claims) => claims,
        Caller::Iam { .. } | Caller::Anonymous => {
            assert_eq!(kind, CallerKind::Unscoped, "{caller:?}");
            return;
        }
    };

    let admin = claims.scopes.contains(&auth.admin_scope)
        || claims
            .groups
            .iter()
            .any(|group| auth.admin_groups.contains(group));
    if admin {
        assert_eq!(kind, CallerKind::Admin, "{claims:?}");
        return;
    }

    assert!(
        claims.user_id.is_some(),
        "accepted a non-admin caller without a user id: {claims:?}"
    );
    if auth.user_isolation {
        assert_eq!(
            claims.user_id.as_deref(),
            Some(target),
            "a scoped caller deletes another user's learnings"
        );
        assert_eq!(kind, CallerKind::OwnUser, "{claims:?}");
    }
}
