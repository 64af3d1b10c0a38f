//! Logging set-up: one JSON object per line, as Lambda's JSON log format expects.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

use crate::xray::{self, XRayLayer};

/// The log filter and line format, from AWS_LAMBDA_LOG_LEVEL, RUST_LOG and
/// AWS_LAMBDA_LOG_FORMAT.
#[derive(Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// EnvFilter directives, such as `info` or `info,aws_smithy_runtime=debug`.
    pub directives: String,
    /// Whether the lines are text instead of JSON.
    pub text: bool,
    /// Invalid values that were replaced by a default, one message each.
    pub warnings: Vec<String>,
}

impl LogSettings {
    /// Reads the settings through `lookup`.
    ///
    /// AWS_LAMBDA_LOG_LEVEL takes Lambda's levels, TRACE to FATAL in any
    /// case, and FATAL logs errors. RUST_LOG, read only when that variable is
    /// unset, takes EnvFilter directives. AWS_LAMBDA_LOG_FORMAT is `JSON` or
    /// `Text`. An invalid value falls back to INFO or JSON with a warning,
    /// instead of stopping the function or silently hiding its error lines.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let directives = match (set("AWS_LAMBDA_LOG_LEVEL"), set("RUST_LOG")) {
            (Some(level), _) => match level.trim().to_ascii_lowercase().as_str() {
                "fatal" => "error".to_owned(),
                known @ ("trace" | "debug" | "info" | "warn" | "error") => known.to_owned(),
                _ => {
                    warnings.push(format!(
                        "AWS_LAMBDA_LOG_LEVEL '{level}' is not TRACE, DEBUG, INFO, WARN, ERROR or FATAL; logging at INFO"
                    ));
                    "info".to_owned()
                }
            },
            (None, Some(directives)) => {
                if let Err(error) = EnvFilter::try_new(&directives) {
                    warnings.push(format!(
                        "RUST_LOG '{directives}' is not a valid filter ({error}); logging at INFO"
                    ));
                    "info".to_owned()
                } else {
                    directives
                }
            }
            (None, None) => "info".to_owned(),
        };

        let text = match set("AWS_LAMBDA_LOG_FORMAT") {
            None => false,
            Some(format) if format.trim().eq_ignore_ascii_case("json") => false,
            Some(format) if format.trim().eq_ignore_ascii_case("text") => true,
            Some(format) => {
                warnings.push(format!(
                    "AWS_LAMBDA_LOG_FORMAT '{format}' is not JSON or Text; writing JSON"
                ));
                false
            }
        };

        Self {
            directives,
            text,
            warnings,
        }
    }
}

/// Installs the global tracing subscriber, then logs a warning for each
/// invalid logging variable.
///
/// The level filters the log lines only, so X-Ray subsegments are sent at
/// every level.
pub fn init() {
    let settings = LogSettings::from_lookup(|name| std::env::var(name).ok());
    let filter =
        EnvFilter::try_new(&settings.directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let without_raw_events = filter_fn(|metadata| !carries_raw_event(metadata));

    // Lambda timestamps every line itself, so the lines carry no time of their own.
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    let xray = XRayLayer::from_env().map(|layer| layer.with_filter(filter_fn(xray::is_xray)));
    if settings.text {
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

    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
}

/// Returns whether an event may contain a whole invocation payload, which
/// carries the caller's Authorization header. lambda_runtime logs the raw
/// event at TRACE level, so that level of its targets is never written.
fn carries_raw_event(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::TRACE && metadata.target().starts_with("lambda_runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(variables: &[(&str, &str)]) -> LogSettings {
        LogSettings::from_lookup(|name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_are_info_and_json() {
        let defaults = settings(&[]);

        assert_eq!(defaults.directives, "info");
        assert!(!defaults.text);
        assert!(defaults.warnings.is_empty());
    }

    #[test]
    fn lambda_levels_are_accepted() {
        for (level, directives) in [
            ("TRACE", "trace"),
            ("debug", "debug"),
            ("Info", "info"),
            ("WARN", "warn"),
            ("ERROR", "error"),
            ("FATAL", "error"),
        ] {
            let parsed = settings(&[("AWS_LAMBDA_LOG_LEVEL", level)]);
            assert_eq!(parsed.directives, directives, "{level}");
            assert!(parsed.warnings.is_empty(), "{level}");
        }
    }

    #[test]
    fn misspelled_level_logs_at_info() {
        // EnvFilter would read "ERORR" as a target name and hide every line.
        let parsed = settings(&[("AWS_LAMBDA_LOG_LEVEL", "ERORR"), ("RUST_LOG", "debug")]);

        assert_eq!(parsed.directives, "info");
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.warnings[0].contains("AWS_LAMBDA_LOG_LEVEL 'ERORR'"));
    }

    #[test]
    fn rust_log_applies_without_lambda_level() {
        let directives = settings(&[("RUST_LOG", "info,aws_smithy_runtime=debug")]);
        let invalid = settings(&[("RUST_LOG", "info,=[")]);

        assert_eq!(directives.directives, "info,aws_smithy_runtime=debug");
        assert!(directives.warnings.is_empty());
        assert_eq!(invalid.directives, "info");
        assert!(
            invalid.warnings[0].starts_with("RUST_LOG"),
            "{:?}",
            invalid.warnings
        );
    }

    #[test]
    fn log_format_is_checked() {
        assert!(settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).text);
        assert!(!settings(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).text);

        let unknown = settings(&[("AWS_LAMBDA_LOG_FORMAT", "yaml")]);
        assert!(!unknown.text);
        assert!(unknown.warnings[0].contains("AWS_LAMBDA_LOG_FORMAT 'yaml'"));
    }
}
