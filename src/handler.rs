//! The request path, top to bottom: event, route, identity, validation,
//! policy, table, deletion, response and one log line.

use std::time::Instant;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use serde_json::Value;

use crate::config::{AuthConfig, Config};
use crate::errors::ApiError;
use crate::event::{FrontEnd, HttpEvent, HttpResponse};
use crate::identity::{self, Caller};
use crate::policy::{self, CallerKind};
use crate::request;
use crate::store::{self, DeletionReport, DeletionScope};

/// The handler's dependencies, built once per cold start.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Config,
    pub dynamodb: Client,
}

/// Handles one Lambda event and returns the HTTP response for its front end.
///
/// Never fails: every outcome, a malformed event included, is an HTTP
/// response, so the runtime never reports an invocation error for a request.
pub async fn handle(app: &App, event: &Value, request_id: &str) -> Value {
    let started = Instant::now();
    let mut log = RequestLog::default();

    let parsed = HttpEvent::parse(event);
    let outcome = match &parsed {
        Ok(http) => delete_learning_user(app, http, &mut log).await,
        Err(not_http) => Err(ApiError::BadRequest(format!("Invalid event: {not_http}"))),
    };

    let response = match &outcome {
        Ok(()) => HttpResponse {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        },
        Err(error) => error_response(error, request_id),
    };

    log.emit(
        request_id,
        event,
        response.status,
        outcome.as_ref().err(),
        started,
    );

    let (front_end, multi_value_headers) = match &parsed {
        Ok(http) => (Some(http.front_end), http.multi_value_headers),
        Err(_) => (None, false),
    };
    response.into_lambda_response(front_end, multi_value_headers)
}

async fn delete_learning_user(
    app: &App,
    http: &HttpEvent<'_>,
    log: &mut RequestLog,
) -> Result<(), ApiError> {
    log.front_end = Some(http.front_end);

    let user_id = request::route(http)?;

    let caller = authenticate(http, &app.config.auth)?;
    log.caller_id = caller.caller_id().map(str::to_owned);

    let request = request::validate(user_id, &http.query)?;
    log.target_user = Some(request.user_id.clone());
    log.learning_type = request.learning_type.clone();

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
    match store::delete_learnings(&app.dynamodb, scope, &app.config.retry).await {
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

/// Reads the caller from the authorizer context.
///
/// # Errors
/// 401 when no authorizer shape is present, unless AUTH_ALLOW_ANONYMOUS is on.
fn authenticate(http: &HttpEvent<'_>, auth: &AuthConfig) -> Result<Caller, ApiError> {
    match identity::caller_from_context(http.request_context, &auth.user_id_claim) {
        Some(caller) => Ok(caller),
        None if auth.allow_anonymous => Ok(Caller::Anonymous),
        None => Err(ApiError::Unauthenticated(
            "Unauthenticated access: the request carries no authorizer identity".to_owned(),
        )),
    }
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

/// The fields of the one log line per request, filled in as the request goes.
#[derive(Debug, Default)]
struct RequestLog {
    front_end: Option<FrontEnd>,
    caller: Option<CallerKind>,
    caller_id: Option<String>,
    target_user: Option<String>,
    learning_type: Option<String>,
    table: Option<String>,
    report: DeletionReport,
}

impl RequestLog {
    fn emit(
        &self,
        request_id: &str,
        event: &Value,
        status: u16,
        error: Option<&ApiError>,
        started: Instant,
    ) {
        let api_request_id = event
            .pointer("/requestContext/requestId")
            .and_then(Value::as_str);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        macro_rules! request_line {
            ($level:expr, $($extra:tt)*) => {
                tracing::event!(
                    $level,
                    request_id,
                    api_request_id,
                    front_end = self.front_end.map(FrontEnd::as_str),
                    caller = self.caller.map(CallerKind::as_str),
                    caller_id = self.caller_id.as_deref(),
                    target_user = self.target_user.as_deref(),
                    learning_type = self.learning_type.as_deref(),
                    table = self.table.as_deref(),
                    deleted = self.report.deleted,
                    pages = self.report.pages,
                    batches = self.report.batches,
                    unprocessed_retries = self.report.unprocessed_retries,
                    duration_ms,
                    status,
                    $($extra)*
                )
            };
        }

        match error {
            None => request_line!(tracing::Level::INFO, "learnings deleted"),
            Some(internal @ ApiError::Internal { source, .. }) => request_line!(
                tracing::Level::ERROR,
                error_code = internal.error_code(),
                error = %DisplayErrorContext(source),
                "learnings deletion failed"
            ),
            Some(rejected) => request_line!(
                tracing::Level::INFO,
                error_code = rejected.error_code(),
                detail = rejected.detail(request_id),
                "request rejected"
            ),
        }
    }
}
