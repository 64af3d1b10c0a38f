//! Shared test fixtures: a dynalite server, tables of learnings, and
//! real-shaped API Gateway events.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

pub mod dynamo_proxy;
pub mod invariants;
pub mod jwks_server;
pub mod runtime_api;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, WriteRequest,
};
use delete_learning_user::config::{
    AuditConfig, AuthConfig, Config, DeletionConfig, DynamoDbConfig, RetryPolicy,
};
use delete_learning_user::handler::{self, App, Handled};
use delete_learning_user::tables::TableCatalog;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A dynalite server shared by every test of one test binary. It exits when
/// the test binary does, because its standard input then closes.
pub struct Dynalite {
    pub endpoint: String,
    _process: Child,
    _stdin: ChildStdin,
}

pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the shared dynalite server, starting it on first use.
///
/// Panics with the install command when Node.js or dynalite is missing: a
/// test that cannot reach its server fails, it is never skipped.
pub fn dynalite() -> &'static Dynalite {
    static SERVER: OnceLock<Dynalite> = OnceLock::new();
    SERVER.get_or_init(start_dynalite)
}

fn start_dynalite() -> Dynalite {
    let root = repository_root();
    let module = root.join("node_modules/dynalite/package.json");
    assert!(
        module.exists(),
        "dynalite is not installed in {}: run `npm ci` in the repository root (or `make test`, which does it)",
        root.display()
    );

    let mut process = Command::new("node")
        .arg(root.join("tests/support/dynalite.js"))
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("failed to start `node` for dynalite ({error}): install Node.js 20 or later")
        });

    let stdout = process.stdout.take().expect("piped stdout");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("read dynalite's first line");
    let port: u16 = first_line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("dynalite did not report its port; it printed {first_line:?}"));

    let stdin = process.stdin.take().expect("piped stdin");
    Dynalite {
        endpoint: format!("http://127.0.0.1:{port}"),
        _process: process,
        _stdin: stdin,
    }
}

/// Builds a DynamoDB client for the shared dynalite server.
///
/// Each test builds its own, because a client's connection pool belongs to
/// the Tokio runtime of the test that created it.
pub fn dynamodb_client() -> Client {
    dynamodb_client_at(&dynalite().endpoint)
}

/// Builds a DynamoDB client with the function's timeouts and retries in
/// `settings`, for a server on 127.0.0.1 such as a proxy in front of dynalite.
pub fn dynamodb_client_with(endpoint: &str, settings: &DynamoDbConfig) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .build();
    Client::from_conf(config)
}

/// Builds a DynamoDB client for a server on 127.0.0.1, such as a proxy in front of dynalite.
pub fn dynamodb_client_at(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// Returns a table name that no other test of this process uses.
pub fn unique_table_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a learnings table with the product's key schema.
pub async fn create_table(client: &Client, table: &str) {
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("user_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("learning_type")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("user_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("learning_type")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "create table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(error)
            )
        });

    // dynalite marks a new table ACTIVE a moment after CreateTable returns.
    for _ in 0..500 {
        let description = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap();
        if description.table().and_then(|table| table.table_status()) == Some(&TableStatus::Active)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("table {table} did not become ACTIVE within 5 s");
}

/// Writes one learning per `(user_id, sort key)` pair, with a payload of
/// `payload_bytes` bytes.
pub async fn put_learnings(
    client: &Client,
    table: &str,
    keys: &[(&str, &str)],
    payload_bytes: usize,
) {
    let learnings: Vec<(&str, &str, usize)> = keys
        .iter()
        .map(|(user_id, sort_key)| (*user_id, *sort_key, payload_bytes))
        .collect();
    put_sized_learnings(client, table, &learnings).await;
}

/// Writes one learning per `(user_id, sort key, payload bytes)` entry. The
/// keys must be distinct, because DynamoDB rejects a batch that writes one
/// key twice.
pub async fn put_sized_learnings(client: &Client, table: &str, learnings: &[(&str, &str, usize)]) {
    let batches = learnings.chunks(25).map(|chunk| {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|(user_id, sort_key, payload_bytes)| {
                let put = PutRequest::builder()
                    .item("user_id", AttributeValue::S((*user_id).to_owned()))
                    .item("learning_type", AttributeValue::S((*sort_key).to_owned()))
                    .item("content", AttributeValue::S("x".repeat(*payload_bytes)))
                    .build()
                    .unwrap();
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        put_batch(client, table, requests)
    });

    // A few batches at a time, so that large tables seed quickly.
    futures_util::stream::iter(batches)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Deletes a table, so that long property runs keep dynalite's memory flat.
pub async fn delete_table(client: &Client, table: &str) {
    client
        .delete_table()
        .table_name(table)
        .send()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "delete table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(error)
            )
        });
}

async fn put_batch(client: &Client, table: &str, requests: Vec<WriteRequest>) {
    let mut pending = HashMap::from([(table.to_owned(), requests)]);
    while !pending.is_empty() {
        let output = client
            .batch_write_item()
            .set_request_items(Some(pending))
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "seed {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(error)
                )
            });
        pending = output.unprocessed_items.unwrap_or_default();
    }
}

/// Every item of a table, by primary key.
pub type Snapshot = BTreeMap<(String, String), HashMap<String, AttributeValue>>;

/// Reads every item of a table with a consistent scan.
pub async fn snapshot(client: &Client, table: &str) -> Snapshot {
    let mut items = Snapshot::new();
    let mut start_key = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "scan {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(error)
                )
            });
        for item in page.items() {
            let key = (
                string_attribute(item, "user_id"),
                string_attribute(item, "learning_type"),
            );
            items.insert(key, item.clone());
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return items,
        }
    }
}

fn string_attribute(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(value)) => value.clone(),
        other => panic!("item without string attribute {name}: {other:?}"),
    }
}

/// Returns the snapshot without the items that `keep` rejects.
pub fn filtered(snapshot: &Snapshot, keep: impl Fn(&str, &str) -> bool) -> Snapshot {
    snapshot
        .iter()
        .filter(|((user_id, sort_key), _)| keep(user_id, sort_key))
        .map(|(key, item)| (key.clone(), item.clone()))
        .collect()
}

/// Returns the sort keys of one user, in order.
pub fn sort_keys_of(snapshot: &Snapshot, user_id: &str) -> Vec<String> {
    snapshot
        .keys()
        .filter(|(owner, _)| owner == user_id)
        .map(|(_, sort_key)| sort_key.clone())
        .collect()
}

/// Builds an app on one table with the default policy.
pub fn app_for_table(client: Client, table: &str) -> App {
    app_with(
        client,
        TableCatalog::from_env_values(Some(table), None).unwrap(),
        AuthConfig::default(),
    )
}

pub fn app_with(client: Client, tables: TableCatalog, auth: AuthConfig) -> App {
    App::new(
        Config {
            tables,
            auth,
            token: None,
            deletion: fast_deletion(),
            dynamodb: DynamoDbConfig::default(),
            audit: AuditConfig::default(),
        },
        client,
    )
}

/// Returns a retry policy with millisecond backoff, so retry tests stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(4),
    }
}

/// Returns the default deletion settings with [`fast_retry`].
pub fn fast_deletion() -> DeletionConfig {
    DeletionConfig {
        retry: fast_retry(),
        ..DeletionConfig::default()
    }
}

/// Sends one event through the handler, with no invocation deadline, and returns its Lambda response.
pub async fn invoke(app: &App, event: &Value) -> Value {
    let invocation = handler::Invocation {
        request_id: "test-request-id",
        ..handler::Invocation::default()
    };
    handler::handle(app, event, invocation).await.response
}

/// Sends one event through the handler with Lambda's invocation deadline at
/// `end`, and returns its response and audit record.
pub async fn invoke_before(app: &App, event: &Value, request_id: &str, end: Instant) -> Handled {
    let invocation = handler::Invocation {
        request_id,
        trace_id: Some(
            "Root=1-6751e2a0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1",
        ),
        end: Some(end),
    };
    handler::handle(app, event, invocation).await
}

/// Returns the status code of a Lambda response.
pub fn status_of(response: &Value) -> u64 {
    response["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("response without statusCode: {response}"))
}

/// Returns the parsed JSON body of an error response.
pub fn error_body(response: &Value) -> Value {
    let body = response["body"]
        .as_str()
        .unwrap_or_else(|| panic!("response without body: {response}"));
    serde_json::from_str(body).unwrap_or_else(|error| panic!("body is not JSON ({error}): {body}"))
}

/// Builds an HTTP API (payload 2.0) event from a JWT authorizer with these claims.
/// Every claim value must be a string, as API Gateway delivers them.
pub fn http_api_event(
    raw_path: &str,
    raw_query: &str,
    path_user_id: Option<&str>,
    claims: Option<Value>,
) -> Value {
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "a1b2c3d4e5",
        "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "a1b2c3d4e5",
        "http": {
            "method": "DELETE",
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.10",
            "userAgent": "integration-test"
        },
        "requestId": "Zr1ZYgFJoAMEVxA=",
        "routeKey": "DELETE /learnings/users/{user_id}",
        "stage": "$default",
        "time": "04/Dec/2026:20:00:00 +0000",
        "timeEpoch": 1_796_500_800_000_u64
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }

    let query_parameters: Option<BTreeMap<String, String>> = (!raw_query.is_empty()).then(|| {
        raw_query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .fold(BTreeMap::new(), |mut map, (name, value)| {
                map.entry(name.to_owned())
                    .and_modify(|joined: &mut String| {
                        joined.push(',');
                        joined.push_str(value);
                    })
                    .or_insert_with(|| value.to_owned());
                map
            })
    });

    json!({
        "version": "2.0",
        "routeKey": "DELETE /learnings/users/{user_id}",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": {"accept": "*/*", "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"},
        "queryStringParameters": query_parameters,
        "pathParameters": path_user_id.map(|user_id| json!({"user_id": user_id})),
        "requestContext": context,
        "isBase64Encoded": false
    })
}

/// Builds an HTTP API event for `DELETE /learnings/users/{user_id}` by a caller with
/// these claims. The user id must need no percent-encoding.
pub fn delete_by(claims: Value, user_id: &str, raw_query: &str) -> Value {
    http_api_event(
        &format!("/learnings/users/{user_id}"),
        raw_query,
        Some(user_id),
        Some(claims),
    )
}

/// Builds a REST API proxy event from a Cognito user-pool authorizer. `encoded_user_id`
/// is the path parameter as REST delivers it, still percent-encoded.
pub fn rest_api_event(encoded_user_id: &str, claims: Value) -> Value {
    let path = format!("/learnings/users/{encoded_user_id}");
    json!({
        "resource": "/learnings/users/{user_id}",
        "path": path,
        "httpMethod": "DELETE",
        "headers": {"Accept": "*/*", "Host": "b2c3d4e5f6.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Accept": ["*/*"], "Host": ["b2c3d4e5f6.execute-api.us-east-1.amazonaws.com"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"user_id": encoded_user_id},
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "b2c3d4e5f6",
            "authorizer": {"claims": claims},
            "httpMethod": "DELETE",
            "identity": {"sourceIp": "203.0.113.11", "userArn": null, "user": null, "userAgent": "integration-test"},
            "path": format!("/prod{path}"),
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "resourcePath": "/learnings/users/{user_id}",
            "stage": "prod"
        },
        "body": null,
        "isBase64Encoded": false
    })
}

/// Reads a JSON file of the repository.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()))
}
