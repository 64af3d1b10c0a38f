//! Lambda bootstrap: reads the configuration, builds the DynamoDB client once,
//! and hands each event to the handler.

use delete_learning_user::config::Config;
use std::io::Write;

use delete_learning_user::handler::{self, App, Invocation};
use delete_learning_user::telemetry;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(variable = error.variable, error = %error, "invalid configuration; the function cannot start");
            return Err(error.into());
        }
    };

    if config.auth.allow_anonymous {
        tracing::warn!(
            "AUTH_ALLOW_ANONYMOUS is on: requests without an authorizer identity may delete any user's learnings; use it for local development only"
        );
    }
    tracing::info!(
        tables = ?config.tables.all_tables(),
        bearer_token_keys = config
            .token
            .as_ref()
            .map_or("none: Bearer tokens are not trusted", |token| token.keys.variable()),
        delete_concurrency = config.deletion.concurrency,
        deadline_margin_ms = config.deletion.deadline_margin.as_millis() as u64,
        dynamodb_connect_timeout_ms = config.dynamodb.connect_timeout.as_millis() as u64,
        dynamodb_attempt_timeout_ms = config.dynamodb.attempt_timeout.as_millis() as u64,
        dynamodb_max_attempts = config.dynamodb.max_attempts,
        metrics_namespace = config.audit.namespace,
        audit_hash_user_ids = config.audit.user_id_key.is_some(),
        "configuration loaded"
    );

    // Credentials and region come from the Lambda environment, and an
    // AWS_ENDPOINT_URL_DYNAMODB variable redirects the client to a local server.
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(config.dynamodb.timeout_config())
        .retry_config(config.dynamodb.retry_config())
        .load()
        .await;
    let app = App::new(config, aws_sdk_dynamodb::Client::new(&sdk_config));

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = &app;
        async move {
            let invocation_end = handler::instant_of(event.context.deadline());
            if invocation_end.is_none() {
                tracing::warn!(
                    request_id = %event.context.request_id,
                    deadline_ms = event.context.deadline,
                    "the invocation deadline has already passed or is out of range, so the deletion runs without one; only a local emulator sends such a value"
                );
            }
            let invocation = Invocation {
                request_id: &event.context.request_id,
                trace_id: event.context.xray_trace_id.as_deref(),
                end: invocation_end,
            };
            let handled = handler::handle(app, &event.payload, invocation).await;

            // The audit record goes to stdout as is, without the tracing
            // layer, because its EMF metadata is a nested object.
            let mut stdout = std::io::stdout().lock();
            if let Err(error) = writeln!(stdout, "{}", handled.audit) {
                tracing::error!(request_id = %event.context.request_id, error = %error, "writing the audit record failed");
            }
            Ok::<Value, Error>(handled.response)
        }
    }))
    .await
}
