//! The four ways of deleting the bench user's items that the bench compares.

pub mod boto3;
pub mod floor;
pub mod naive;
pub mod ours;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One way of deleting the bench user's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runner {
    /// The release `bootstrap` binary, driven through the Runtime API.
    Ours,
    /// Sequential Rust: one Query page, then its batches one after another.
    Naive,
    /// Python: paginated `Table.query` and `Table.batch_writer`.
    Boto3,
    /// Prebuilt BatchWriteItem calls from the known keys, no Query.
    Floor,
}

impl Runner {
    pub const ALL: [Runner; 4] = [Runner::Ours, Runner::Naive, Runner::Boto3, Runner::Floor];

    /// Short name for tables and messages.
    pub fn label(self) -> &'static str {
        match self {
            Runner::Ours => "ours",
            Runner::Naive => "naive",
            Runner::Boto3 => "boto3",
            Runner::Floor => "floor",
        }
    }
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Seconds from the start of the deletion to its end, as the runner defines them.
    pub seconds: f64,
    /// Items that the runner reported deleted.
    pub deleted: u64,
    /// Peak resident set size of the function process (ours only).
    pub peak_rss_kib: Option<u64>,
    /// Query and BatchWriteItem calls that the function logged (ours only).
    pub logged_calls: Option<LoggedCalls>,
}

/// The `pages` and `batches` fields of the function's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedCalls {
    pub pages: u64,
    pub batches: u64,
}

/// Files and addresses that the runners need.
#[derive(Debug, Clone)]
pub struct RunnerContext {
    /// The release `bootstrap` binary.
    pub bootstrap: PathBuf,
    /// The bench venv's Python.
    pub python: PathBuf,
    /// The folder with the bench's Python scripts.
    pub python_scripts: PathBuf,
    /// The latency proxy's endpoint, which every runner talks to.
    pub endpoint: String,
    pub table: String,
    /// The admin event for `DELETE /learnings/users/{bench user}`.
    pub event: serde_json::Value,
    /// BatchWriteItem calls in flight for the function and the floor.
    pub concurrency: usize,
}

/// Returns the time limit of one run of `items` items, generous enough for
/// boto3 at 100,000 items with a few milliseconds of latency.
pub fn run_timeout(items: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(5 * items as u64)
}

/// Returns the environment that Lambda gives a function, pointed at the bench's
/// Runtime API and at the proxy.
pub fn lambda_environment(
    runtime_api: SocketAddr,
    context: &RunnerContext,
) -> Vec<(&'static str, String)> {
    let mut environment = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            "delete-learning-user".to_owned(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
    ];
    environment.extend(aws_environment(context));
    environment
}

/// Returns the AWS settings of every child process: dummy credentials, the
/// region, no instance metadata, the proxy as DynamoDB endpoint, and the table.
///
/// Child processes start from an empty environment plus these variables, so
/// no inherited setting can send their calls anywhere but the proxy.
pub fn aws_environment(context: &RunnerContext) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", context.endpoint.clone()),
        ("LEARNINGS_TABLE", context.table.clone()),
    ]
}
