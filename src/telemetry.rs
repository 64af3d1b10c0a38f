//! Logging set-up: one JSON object per line, as Lambda's JSON log format expects.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

use crate::xray::{self, XRayLayer};

/// Installs the global tracing subscriber.
///
/// Lines are JSON unless AWS_LAMBDA_LOG_FORMAT is `Text`. The level comes from
/// AWS_LAMBDA_LOG_LEVEL (set by the function's logging configuration), then
/// RUST_LOG, and is INFO by default. The level filters the log lines only,
/// so X-Ray subsegments are sent at every level.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter =
        EnvFilter::try_new(level.to_lowercase()).unwrap_or_else(|_| EnvFilter::new("info"));
    let without_raw_events = filter_fn(|metadata| !carries_raw_event(metadata));

    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("text"));

    // Lambda timestamps every line itself, so the lines carry no time of their own.
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    let xray = XRayLayer::from_env().map(|layer| layer.with_filter(filter_fn(xray::is_xray)));
    if text {
        tracing_subscriber::registry()
            .with(xray)
            .with(
                layer
                    .with_ansi(false)
                    .with_filter(without_raw_events)
                    .with_filter(filter),
            )
            .init();
    } else {
        let json = layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        tracing_subscriber::registry()
            .with(xray)
            .with(json.with_filter(without_raw_events).with_filter(filter))
            .init();
    }
}

/// Returns whether an event may contain a whole invocation payload, which
/// carries the caller's Authorization header. lambda_runtime logs the raw
/// event at TRACE level, so that level of its targets is never written.
fn carries_raw_event(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::TRACE && metadata.target().starts_with("lambda_runtime")
}
