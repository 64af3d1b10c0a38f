//! The request path, top to bottom: event, route, identity, validation,
//! policy, table, deletion, response and one log line.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use serde_json::Value;

use crate::audit::{AuditRecord, Outcome};
use crate::config::Config;
use crate::errors::ApiError;
use crate::event::{AuthorizationHeader, FrontEnd, HttpEvent, HttpResponse};
use crate::identity::{self, Caller};
use crate::policy::{self, CallerKind};
use crate::request;
use crate::store::{self, Deadline, DeletionReport, DeletionScope, StoreError};
use crate::token::{TokenError, TokenVerifier};

/// The handler's dependencies, built once per cold start.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub dynamodb: Client,
    /// The Bearer-token verifier, when a JWT key source is configured.
    pub tokens: Option<TokenVerifier>,
}

impl App {
    /// Builds the app. It makes no network call: a JWKS URL is fetched on first use.
    pub fn new(config: Config, dynamodb: Client) -> Self {
        let tokens = config.token.clone().map(TokenVerifier::new);
        Self {
            config,
            dynamodb,
            tokens,
        }
    }
}

/// The invocation data that Lambda sends along with an event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation<'a> {
    pub request_id: &'a str,
    /// The X-Ray trace header, which Lambda sends when tracing is active.
    pub trace_id: Option<&'a str>,
    /// When Lambda ends the invocation, or None for no limit.
    pub end: Option<Instant>,
}

/// The result of one event: the response for its front end, and the audit
/// record for the log.
#[derive(Debug, Clone)]
pub struct Handled {
    pub response: Value,
    /// One JSON object, to be written to stdout as one line.
    pub audit: Value,
}

/// Handles one Lambda event and returns the HTTP response for its front end
/// with the request's audit record.
///
/// The deletion stops early enough before `invocation.end` to return a 500
/// with the number of deleted learnings, instead of letting the invocation
/// time out.
///
/// Never fails: every outcome, a malformed event included, is an HTTP
/// response, so the runtime never reports an invocation error for a request.
///
/// NOTE: a payload that is not JSON, or nests deeper than serde_json's limit
/// of 128 levels, fails in lambda_runtime's deserializer before this function
/// runs. API Gateway, function URLs and ALBs never send such payloads.
pub async fn handle(app: &App, event: &Value, invocation: Invocation<'_>) -> Handled {
    let started = Instant::now();
    let mut log = RequestLog {
        time_left_ms: invocation.end.map(|end| {
            let left = end.saturating_duration_since(started);
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        }),
        ..RequestLog::default()
    };

    let deadline = invocation
        .end
        .map(|end| Deadline::new(end, app.config.deletion.deadline_margin));
    let parsed = HttpEvent::parse(event);
    let outcome = match &parsed {
        Ok(http) => delete_learning_user(app, http, deadline, &mut log).await,
        Err(not_http) => Err(ApiError::BadRequest(format!("Invalid event: {not_http}"))),
    };

    let response = match &outcome {
        Ok(()) => HttpResponse {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        },
        Err(error) => error_response(error, invocation.request_id),
    };

    let record = log.audit_record(
        invocation,
        event,
        response.status,
        outcome.as_ref().err(),
        started,
    );
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    let audit = record.to_json(&app.config.audit, timestamp_ms);

    let (front_end, multi_value_headers) = match &parsed {
        Ok(http) => (Some(http.front_end), http.multi_value_headers),
        Err(_) => (None, false),
    };
    Handled {
        response: response.into_lambda_response(front_end, multi_value_headers),
        audit,
    }
}

/// Converts Lambda's deadline, a wall-clock time, to an instant of the
/// monotonic clock that the deletion measures time with.
///
/// Returns None, which sets no limit, for a deadline that has already passed
/// when the event arrives. Lambda never sends one, because it would have ended
/// the invocation first, but local emulators do: cargo lambda 1.9.2 sends a
/// fixed 600,000 ms after the Unix epoch. Also returns None for a deadline too
/// far ahead for the clock.
pub fn instant_of(deadline: SystemTime) -> Option<Instant> {
    let now = Instant::now();
    match deadline.duration_since(SystemTime::now()) {
        Ok(remaining) if !remaining.is_zero() => now.checked_add(remaining),
        _ => None,
    }
}

async fn delete_learning_user(
    app: &App,
    http: &HttpEvent<'_>,
    deadline: Option<Deadline>,
    log: &mut RequestLog,
) -> Result<(), ApiError> {
    log.front_end = Some(http.front_end);

    let user_id = request::route(http)?;

    let caller = authenticate(app, http).await?;
    log.caller_id = caller.caller_id().map(str::to_owned);
    log.identity_source = Some(caller.source());

    let request = request::validate(user_id, &http.query)?;
    log.target_user = Some(request.user_id.clone());
    log.learning_type = request.learning_type.clone();
    log.db_id = request.db_id.clone();

    let kind = policy::authorize(&caller, &request.user_id, &app.config.auth)?;
    log.caller = Some(kind);

    let table = app
        .config
        .tables
        .resolve(request.db_id.as_deref(), request.table.as_deref())?;
    log.table = Some(table.to_owned());

    let scope = DeletionScope {
        table,
        user_id: &request.user_id,
        learning_type: request.learning_type.as_deref(),
    };
    // Boxed because the pipeline's future type nests deeply enough to exceed
    // the compiler's recursion limit when inlined into the runtime's future.
    let deletion = Box::pin(store::delete_learnings(
        &app.dynamodb,
        scope,
        &app.config.deletion,
        deadline,
    ));
    match deletion.await {
        Ok(report) => {
            log.report = report;
            Ok(())
        }
        Err(failure) => {
            log.report = failure.report;
            Err(ApiError::Internal {
                deleted: failure.report.deleted,
                source: failure.source,
            })
        }
    }
}

/// Reads the caller from the authorizer context, or else from a Bearer token.
///
/// An authorizer context always wins, so a Bearer token beside it is ignored
/// and can never change the identity that API Gateway vouched for. Without a
/// configured key source, Bearer tokens are not trusted and are ignored too.
///
/// # Errors
/// 401 when no identity is present (unless AUTH_ALLOW_ANONYMOUS is on), or
/// when the Bearer token is rejected. 500 when a JWKS URL cannot be fetched.
async fn authenticate(app: &App, http: &HttpEvent<'_>) -> Result<Caller, ApiError> {
    let auth = &app.config.auth;
    if let Some(caller) = identity::caller_from_context(http.request_context, &auth.user_id_claim) {
        return Ok(caller);
    }

    let header = match (&app.tokens, http.authorization) {
        (Some(verifier), AuthorizationHeader::Single(header)) => Some((verifier, header)),
        (Some(_), AuthorizationHeader::Multiple) => {
            return Err(unauthenticated(&TokenError::MultipleHeaders));
        }
        _ => None,
    };
    let Some((verifier, header)) = header else {
        if auth.allow_anonymous {
            return Ok(Caller::Anonymous);
        }
        let detail = if http.authorization == AuthorizationHeader::Absent {
            "Unauthenticated access: the request carries no authorizer identity or Bearer token"
        } else {
            "Unauthenticated access: the request carries no authorizer identity, and Authorization headers are not trusted because no JWT key source is configured"
        };
        return Err(ApiError::Unauthenticated(detail.to_owned()));
    };

    let token = bearer_token(header).map_err(|error| unauthenticated(&error))?;
    match verifier.verify(token).await {
        Ok(claims) => Ok(identity::caller_from_token_claims(
            &claims,
            &auth.user_id_claim,
        )),
        Err(error @ TokenError::KeysUnavailable(_)) => Err(ApiError::KeysUnavailable(error)),
        Err(error) => Err(unauthenticated(&error)),
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header value.
fn bearer_token(header: &str) -> Result<&str, TokenError> {
    let header = header.trim();
    if header.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }

    let (scheme, token) = header.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }

    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

fn unauthenticated(error: &TokenError) -> ApiError {
    ApiError::Unauthenticated(error.to_string())
}

fn error_response(error: &ApiError, request_id: &str) -> HttpResponse {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if matches!(error, ApiError::MethodNotAllowed { .. }) {
        headers.push(("allow", "DELETE".to_owned()));
    }

    HttpResponse {
        status: error.status(),
        headers,
        body: error.body(request_id).to_string(),
    }
}

/// The fields of the audit record, filled in as the request goes.
#[derive(Debug, Default)]
struct RequestLog {
    front_end: Option<FrontEnd>,
    caller: Option<CallerKind>,
    caller_id: Option<String>,
    identity_source: Option<&'static str>,
    target_user: Option<String>,
    learning_type: Option<String>,
    db_id: Option<String>,
    table: Option<String>,
    /// Milliseconds left before the invocation deadline when the request started.
    time_left_ms: Option<u64>,
    report: DeletionReport,
}

impl RequestLog {
    fn audit_record<'a>(
        &'a self,
        invocation: Invocation<'a>,
        event: &'a Value,
        status: u16,
        error: Option<&ApiError>,
        started: Instant,
    ) -> AuditRecord<'a> {
        let (outcome, message) = match error {
            None => (Outcome::Deleted, "learnings deleted"),
            Some(ApiError::KeysUnavailable(_)) => {
                (Outcome::Failed, "token verification keys unavailable")
            }
            Some(ApiError::Internal {
                source: StoreError::DeadlineReached,
                ..
            }) => (
                Outcome::DeadlineReached,
                "learnings deletion stopped before the deadline",
            ),
            Some(ApiError::Internal { .. }) => (Outcome::Failed, "learnings deletion failed"),
            Some(_) => (Outcome::Rejected, "request rejected"),
        };

        // A 500's cause stays in the log, and a rejection's detail is what
        // the client reads.
        let (detail, cause) = match error {
            Some(ApiError::KeysUnavailable(source)) => (None, Some(source.to_string())),
            Some(ApiError::Internal { source, .. }) => {
                (None, Some(DisplayErrorContext(source).to_string()))
            }
            Some(rejected) => (Some(rejected.detail(invocation.request_id)), None),
            None => (None, None),
        };

        AuditRecord {
            request_id: invocation.request_id,
            trace_id: invocation.trace_id,
            api_request_id: event
                .pointer("/requestContext/requestId")
                .and_then(Value::as_str),
            front_end: self.front_end.map(FrontEnd::as_str),
            identity_source: self.identity_source,
            caller_kind: self.caller.map(CallerKind::as_str),
            caller_id: self.caller_id.as_deref(),
            target_user: self.target_user.as_deref(),
            learning_type: self.learning_type.as_deref(),
            db_id: self.db_id.as_deref(),
            table: self.table.as_deref(),
            report: self.report,
            time_left_ms: self.time_left_ms,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status,
            outcome,
            message,
            error_code: error.map(ApiError::error_code),
            detail,
            error: cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadline_ahead_keeps_its_distance() {
        let before = Instant::now();

        let instant = instant_of(SystemTime::now() + Duration::from_secs(20)).unwrap();

        assert!(instant >= before + Duration::from_secs(19));
        assert!(instant <= Instant::now() + Duration::from_secs(20));
    }

    #[test]
    fn past_deadline_sets_no_limit() {
        let instant = instant_of(SystemTime::now() - Duration::from_secs(5));

        assert_eq!(instant, None);
    }

    #[test]
    fn emulator_deadline_sets_no_limit() {
        // cargo lambda 1.9.2 sends this fixed value in lambda-runtime-deadline-ms.
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);

        assert_eq!(instant_of(deadline), None);
    }

    #[test]
    fn largest_lambda_deadline_converts() {
        // Lambda sends milliseconds since the epoch as a u64.
        let far = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::MAX);

        let instant = instant_of(far);

        assert!(instant.is_some_and(|instant| instant > Instant::now()));
    }
}
