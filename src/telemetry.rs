//! Logging set-up: one JSON object per line, as Lambda's JSON log format expects.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber.
///
/// Lines are JSON unless AWS_LAMBDA_LOG_FORMAT is `Text`. The level comes from
/// AWS_LAMBDA_LOG_LEVEL (set by the function's logging configuration), then
/// RUST_LOG, and is INFO by default.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter =
        EnvFilter::try_new(level.to_lowercase()).unwrap_or_else(|_| EnvFilter::new("info"));

    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("text"));

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time();

    // Lambda timestamps every line itself, so the lines carry no time of their own.
    if text {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    }
}
