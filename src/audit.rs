//! The audit record: one JSON line per request that records who erased whose
//! learnings, and how the request ended.
//!
//! The same line carries the request's CloudWatch metrics in the Embedded
//! Metric Format (EMF): an `_aws` member that names the metrics, and the
//! metric values and dimensions as top-level members. CloudWatch Logs
//! extracts the metrics from the line when Lambda delivers it, so publishing
//! them needs no API call. The format is specified in "Specification:
//! Embedded metric format" of the Amazon CloudWatch user guide. EMF crates
//! such as metrique bring a metrics model of their own, and the record is one
//! plain JSON object of mixed fields, so its few EMF members are built here.

use aws_lc_rs::hmac;
use serde_json::{Map, Value, json};

use crate::config::AuditConfig;
use crate::store::DeletionReport;

/// The metrics of each request, with their CloudWatch units.
pub const METRICS: [(&str, &str); 5] = [
    ("DeletedItems", "Count"),
    ("Batches", "Count"),
    ("UnprocessedRetries", "Count"),
    ("Throttles", "Count"),
    ("Duration", "Milliseconds"),
];

/// The end of a request, as the `Outcome` dimension of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 204: everything in scope is gone.
    Deleted,
    /// A 4xx: nothing was deleted.
    Rejected,
    /// A 500 from a DynamoDB failure or unavailable token keys.
    Failed,
    /// A 500 because the invocation deadline came near before the end.
    DeadlineReached,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "Deleted",
            Self::Rejected => "Rejected",
            Self::Failed => "Failed",
            Self::DeadlineReached => "DeadlineReached",
        }
    }
}

/// The fields of one audit record. Absent values are left out of the line.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// Lambda's request id.
    pub request_id: &'a str,
    /// The invocation's X-Ray trace header, as Lambda sends it.
    pub trace_id: Option<&'a str>,
    /// API Gateway's request id, from the event's request context.
    pub api_request_id: Option<&'a str>,
    pub front_end: Option<&'static str>,
    pub identity_source: Option<&'static str>,
    /// `admin`, `self` or `unscoped`, once the policy allowed the request.
    pub caller_kind: Option<&'static str>,
    pub caller_id: Option<&'a str>,
    pub target_user: Option<&'a str>,
    pub learning_type: Option<&'a str>,
    pub db_id: Option<&'a str>,
    pub table: Option<&'a str>,
    pub report: DeletionReport,
    /// Milliseconds left before the invocation deadline when the request started.
    pub time_left_ms: Option<u64>,
    pub duration_ms: u64,
    pub status: u16,
    pub outcome: Outcome,
    pub message: &'a str,
    pub error_code: Option<&'static str>,
    /// The detail that the client reads, for a rejected request.
    pub detail: Option<String>,
    /// The full error chain of a 500, which the client never reads.
    pub error: Option<String>,
}

impl AuditRecord<'_> {
    /// Builds the JSON line, with user ids hashed when `config` has a key,
    /// and the metrics stamped with `timestamp_ms` since the Unix epoch.
    pub fn to_json(&self, config: &AuditConfig, timestamp_ms: u64) -> Value {
        let user_id = |id: Option<&str>| match (&config.user_id_key, id) {
            (Some(key), Some(id)) => Some(hash_user_id(key.as_bytes(), id)),
            (None, Some(id)) => Some(id.to_owned()),
            (_, None) => None,
        };
        let level = if self.status >= 500 { "ERROR" } else { "INFO" };
        let report = &self.report;

        let mut line = Map::new();
        let mut put = |name: &str, value: Value| {
            if !value.is_null() {
                line.insert(name.to_owned(), value);
            }
        };
        put("level", json!(level));
        put("message", json!(self.message));
        put("request_id", json!(self.request_id));
        put("trace_id", json!(self.trace_id));
        put("api_request_id", json!(self.api_request_id));
        put("front_end", json!(self.front_end));
        put("identity_source", json!(self.identity_source));
        put("caller_kind", json!(self.caller_kind));
        put("caller_id", json!(user_id(self.caller_id)));
        put("target_user", json!(user_id(self.target_user)));
        put("user_ids_hashed", json!(config.user_id_key.is_some()));
        put("learning_type", json!(self.learning_type));
        put("db_id", json!(self.db_id));
        put("table", json!(self.table));
        put("deleted", json!(report.deleted));
        put("pages", json!(report.pages));
        put("batches", json!(report.batches));
        put("unprocessed_retries", json!(report.unprocessed_retries));
        put("sdk_retries", json!(report.sdk_retries));
        put("throttles", json!(report.throttles));
        put("time_left_ms", json!(self.time_left_ms));
        put("duration_ms", json!(self.duration_ms));
        put("status", json!(self.status));
        put("error_code", json!(self.error_code));
        put("detail", json!(self.detail));
        put("error", json!(self.error));

        put("Outcome", json!(self.outcome.as_str()));
        put("FunctionName", json!(config.function_name));
        put("DeletedItems", json!(report.deleted));
        put("Batches", json!(report.batches));
        put("UnprocessedRetries", json!(report.unprocessed_retries));
        put("Throttles", json!(report.throttles));
        put("Duration", json!(self.duration_ms));
        put("_aws", metrics_metadata(config, timestamp_ms));
        Value::Object(line)
    }
}

/// Builds the `_aws` member, which declares to CloudWatch which members are metrics.
///
/// The metrics have the dimension set (FunctionName, Outcome), or (Outcome)
/// outside Lambda, where AWS_LAMBDA_FUNCTION_NAME is unset.
fn metrics_metadata(config: &AuditConfig, timestamp_ms: u64) -> Value {
    let dimensions: Vec<&str> = match config.function_name {
        Some(_) => vec!["FunctionName", "Outcome"],
        None => vec!["Outcome"],
    };
    let metrics: Vec<Value> = METRICS
        .iter()
        .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
        .collect();

    json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": config.namespace,
            "Dimensions": [dimensions],
            "Metrics": metrics,
        }],
    })
}

/// Returns `hmac-sha256:` and the first 16 bytes, in hex, of the HMAC-SHA256
/// of the user id under `key`. Equal ids give equal hashes, so the records of
/// one user can still be found, but without the key an id cannot be tested.
pub fn hash_user_id(key: &[u8], user_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, user_id.as_bytes());
    let hex: String = tag.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("hmac-sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditKey;

    fn config(function_name: Option<&str>, key: Option<&str>) -> AuditConfig {
        AuditConfig {
            namespace: "AgentOS/Learnings".to_owned(),
            function_name: function_name.map(str::to_owned),
            user_id_key: key.map(|key| AuditKey::new(key.as_bytes().to_vec())),
        }
    }

    fn deleted_record() -> AuditRecord<'static> {
        AuditRecord {
            request_id: "request-1",
            trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
            api_request_id: None,
            front_end: Some("http_api_v2"),
            identity_source: Some("jwt"),
            caller_kind: Some("admin"),
            caller_id: Some("admin-1"),
            target_user: Some("user-a"),
            learning_type: None,
            db_id: None,
            table: Some("agno_learnings"),
            report: DeletionReport {
                deleted: 60,
                pages: 1,
                batches: 3,
                unprocessed_retries: 1,
                sdk_retries: 2,
                throttles: 2,
            },
            time_left_ms: Some(24_000),
            duration_ms: 41,
            status: 204,
            outcome: Outcome::Deleted,
            message: "learnings deleted",
            error_code: None,
            detail: None,
            error: None,
        }
    }

    /// Checks a line against the rules of the EMF specification. `_aws` has a
    /// millisecond Timestamp and CloudWatchMetrics directives. Each directive
    /// has a Namespace, at most 30 dimensions per set and at most 100 metrics.
    /// Every dimension is a top-level string member, and every metric a
    /// top-level number member.
    fn assert_valid_emf(line: &Value) {
        let metadata = &line["_aws"];
        assert!(metadata["Timestamp"].is_u64(), "{line}");
        let directives = metadata["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());

        for directive in directives {
            let namespace = directive["Namespace"].as_str().unwrap();
            // CloudWatch's limits for a namespace: 1 to 255 characters.
            assert!(!namespace.is_empty());
            assert!(namespace.len() <= 255);

            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30);
                for dimension in set {
                    let name = dimension.as_str().unwrap();
                    assert!(
                        line[name].is_string(),
                        "dimension {name} is not a string member"
                    );
                }
            }

            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(!metrics.is_empty());
            assert!(metrics.len() <= 100);
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(
                    line[name].is_number(),
                    "metric {name} is not a number member"
                );
                assert!(metric["Unit"].is_string());
            }
        }
    }

    #[test]
    fn record_carries_valid_metrics() {
        let line = deleted_record().to_json(
            &config(Some("delete-learning-user"), None),
            1_796_500_800_000,
        );

        assert_valid_emf(&line);
        assert_eq!(line["_aws"]["Timestamp"], 1_796_500_800_000_u64);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName", "Outcome"]])
        );
        assert_eq!(line["Outcome"], "Deleted");
        assert_eq!(line["FunctionName"], "delete-learning-user");
        assert_eq!(line["DeletedItems"], 60);
        assert_eq!(line["Batches"], 3);
        assert_eq!(line["UnprocessedRetries"], 1);
        assert_eq!(line["Throttles"], 2);
        assert_eq!(line["Duration"], 41);
    }

    #[test]
    fn metrics_outside_lambda_have_outcome_only() {
        let line = deleted_record().to_json(&config(None, None), 0);

        assert_valid_emf(&line);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Outcome"]])
        );
        assert!(line.get("FunctionName").is_none());
    }

    #[test]
    fn record_names_who_erased_whose_learnings() {
        let line = deleted_record().to_json(&config(None, None), 0);

        assert_eq!(line["level"], "INFO");
        assert_eq!(line["request_id"], "request-1");
        assert_eq!(
            line["trace_id"],
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
        );
        assert_eq!(line["caller_kind"], "admin");
        assert_eq!(line["caller_id"], "admin-1");
        assert_eq!(line["target_user"], "user-a");
        assert_eq!(line["user_ids_hashed"], false);
        assert_eq!(line["sdk_retries"], 2);
        assert_eq!(line["status"], 204);
        assert!(
            line.get("learning_type").is_none(),
            "absent values are left out"
        );
    }

    #[test]
    fn hashed_record_hides_user_ids() {
        let key = "k".repeat(32);
        let line = deleted_record().to_json(&config(None, Some(&key)), 0);

        let text = line.to_string();
        assert!(!text.contains("user-a"), "{text}");
        assert!(!text.contains("admin-1"), "{text}");
        assert_eq!(line["target_user"], hash_user_id(key.as_bytes(), "user-a"));
        assert_eq!(line["user_ids_hashed"], true);
    }

    #[test]
    fn hash_depends_on_key_and_id() {
        let first = hash_user_id(b"key-one-key-one-key-one-key-one!", "user-a");

        assert_eq!(
            first,
            hash_user_id(b"key-one-key-one-key-one-key-one!", "user-a")
        );
        assert_ne!(
            first,
            hash_user_id(b"key-two-key-two-key-two-key-two!", "user-a")
        );
        assert_ne!(
            first,
            hash_user_id(b"key-one-key-one-key-one-key-one!", "user-b")
        );
        assert_eq!(first.len(), "hmac-sha256:".len() + 32);
    }

    #[test]
    fn hash_matches_rfc_4231_vector() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let hash = hash_user_id(b"Jefe", "what do ya want for nothing?");

        assert_eq!(hash, "hmac-sha256:5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn failed_record_is_error_level() {
        let record = AuditRecord {
            status: 500,
            outcome: Outcome::DeadlineReached,
            ..deleted_record()
        };

        let line = record.to_json(&config(None, None), 0);

        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["Outcome"], "DeadlineReached");
    }
}
