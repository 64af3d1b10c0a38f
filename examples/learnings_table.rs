//! Creates, seeds and inspects the local learnings table that `scripts/demo.sh` runs the
//! function against.
//!
//! ```text
//! cargo run --example learnings_table -- seed    # create the table and write the demo dataset
//! cargo run --example learnings_table -- count   # print "<user_id> <items>" for each user
//! cargo run --example learnings_table -- list    # print "<user_id> <learning_type>" for each item
//! ```
//!
//! The table is LEARNINGS_TABLE (default `agno_learnings`), the table that the function reads.
//! The server is AWS_ENDPOINT_URL_DYNAMODB, which must be set, because without it the SDK would
//! send requests to the real DynamoDB of an AWS account. The credentials are fixed dummy values
//! and the region is AWS_REGION (default `us-east-1`), so the SDK uses no profile's credentials
//! and never queries the instance metadata service. It still reads the profile files for other
//! settings. Local servers such as dynalite do not check signatures.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt::Debug;
use std::process::ExitCode;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, WriteRequest,
};

const USAGE: &str = "usage: learnings_table <seed|count|list>";
const DEFAULT_TABLE: &str = "agno_learnings";
const DEFAULT_REGION: &str = "us-east-1";

/// The demo's users and the sort keys of their learnings.
///
/// user-d has a bare `entity_memory` item, an `entity_memory` record and a record of the
/// look-alike type `entity_memory_v2`, so that a deletion of type `entity_memory` can be
/// checked to keep `entity_memory_v2#acme`.
/// `idp|user-c` needs percent-encoding in a REST API path. user-g is the target of the
/// Bearer-token events and of the demo's curl call.
const DATASET: &[(&str, &[&str])] = &[
    (
        "user-a",
        &[
            "user_profile",
            "user_memory",
            "entity_memory#acme",
            "entity_memory#globex",
            "session_context",
            "decision_log#2026-11-30-001",
        ],
    ),
    (
        "user-b",
        &["user_profile", "user_memory", "learned_knowledge#k1"],
    ),
    ("idp|user-c", &["user_profile", "user_memory"]),
    (
        "user-d",
        &[
            "user_profile",
            "user_memory",
            "entity_memory",
            "entity_memory#acme",
            "entity_memory_v2#acme",
        ],
    ),
    (
        "user-e",
        &["user_profile", "decision_log#d1", "decision_log#d2"],
    ),
    ("user-f", &["user_profile"]),
    (
        "user-g",
        &["user_profile", "entity_memory#acme", "entity_memory#globex"],
    ),
];

/// How long `seed` waits for the new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(10);
const ACTIVE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Maximum number of BatchWriteItem calls per batch, the first included.
const MAX_WRITE_ATTEMPTS: u32 = 10;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [command] = arguments.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if !matches!(command.as_str(), "seed" | "count" | "list") {
        eprintln!("unknown command '{command}'; {USAGE}");
        return ExitCode::from(2);
    }

    match run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("learnings_table {command}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: &str) -> Result<()> {
    let table = std::env::var("LEARNINGS_TABLE").unwrap_or_else(|_| DEFAULT_TABLE.to_owned());
    let client = local_client().await?;

    match command {
        "seed" => seed(&client, &table).await,
        "count" => print_counts(&client, &table).await,
        "list" => print_keys(&client, &table).await,
        _ => unreachable!("main() accepts only seed, count and list"),
    }
}

/// Builds a client for the server in AWS_ENDPOINT_URL_DYNAMODB.
///
/// The endpoint is set on the loader explicitly, so that
/// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS cannot send the requests to AWS instead.
async fn local_client() -> Result<Client> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or(
            "AWS_ENDPOINT_URL_DYNAMODB is not set; set it to a local DynamoDB-compatible server, \
             such as http://127.0.0.1:8000",
        )?;
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| DEFAULT_REGION.to_owned());

    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region))
        .credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "learnings_table",
        ))
        .load()
        .await;
    Ok(Client::new(&sdk_config))
}

/// Creates the table, waits until it is ACTIVE and writes every learning of [`DATASET`].
async fn seed(client: &Client, table: &str) -> Result<()> {
    create_table(client, table).await?;
    wait_until_active(client, table).await?;

    let requests: Vec<WriteRequest> = DATASET
        .iter()
        .flat_map(|(user_id, sort_keys)| sort_keys.iter().map(move |key| (*user_id, *key)))
        .map(|(user_id, sort_key)| put_request(user_id, sort_key))
        .collect::<Result<_>>()?;
    let item_count = requests.len();

    // BatchWriteItem takes at most 25 write requests per call.
    for batch in requests.chunks(25) {
        write_batch(client, table, batch.to_vec()).await?;
    }

    println!(
        "created table {table} and wrote {item_count} learnings of {} users",
        DATASET.len()
    );
    Ok(())
}

/// Creates the table with the function's key schema: `user_id` (S) and `learning_type` (S).
async fn create_table(client: &Client, table: &str) -> Result<()> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
    };

    let result = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("user_id")?)
        .attribute_definitions(attribute("learning_type")?)
        .key_schema(key("user_id", KeyType::Hash)?)
        .key_schema(key("learning_type", KeyType::Range)?)
        .send()
        .await;

    match result {
        Ok(_) => Ok(()),
        Err(error)
            if matches!(
                error.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            // A stale table would make the counts after each demo step meaningless.
            Err(format!(
                "table {table} already exists; seed needs a server without it, such as a freshly started dynalite"
            )
            .into())
        }
        Err(error) => Err(format!("CreateTable {table} failed: {}", describe(error)).into()),
    }
}

/// Polls DescribeTable until the table is ACTIVE. dynalite 4.0.0 reports a new table as
/// CREATING until a timer fires after CreateTable returns, even with `createTableMs: 0`, and
/// rejects writes to it with ResourceNotFoundException until then.
async fn wait_until_active(client: &Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let description = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|error| format!("DescribeTable {table} failed: {}", describe(error)))?;
        let status = description.table().and_then(|table| table.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }

        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "table {table} is still {status:?} {} s after CreateTable",
                ACTIVE_TIMEOUT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(ACTIVE_POLL_INTERVAL).await;
    }
}

fn put_request(user_id: &str, sort_key: &str) -> Result<WriteRequest> {
    let put = PutRequest::builder()
        .item("user_id", AttributeValue::S(user_id.to_owned()))
        .item("learning_type", AttributeValue::S(sort_key.to_owned()))
        .item(
            "content",
            AttributeValue::S(format!("demo learning {sort_key} of {user_id}")),
        )
        .build()?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// Writes one batch, sending the UnprocessedItems again until none are left.
async fn write_batch(client: &Client, table: &str, batch: Vec<WriteRequest>) -> Result<()> {
    let mut pending = HashMap::from([(table.to_owned(), batch)]);
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let output = client
            .batch_write_item()
            .set_request_items(Some(pending))
            .send()
            .await
            .map_err(|error| format!("BatchWriteItem {table} failed: {}", describe(error)))?;

        pending = output.unprocessed_items.unwrap_or_default();
        pending.retain(|_, requests| !requests.is_empty());
        if pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let remaining: usize = pending.values().map(Vec::len).sum();
    Err(format!(
        "{remaining} items of {table} were still unprocessed after {MAX_WRITE_ATTEMPTS} BatchWriteItem calls"
    )
    .into())
}

/// Prints each user's item count, the users of [`DATASET`] first and in its order, even at 0.
/// Users that are not in the dataset follow in sorted order, so that no item goes unreported.
async fn print_counts(client: &Client, table: &str) -> Result<()> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (user_id, _) in scan_keys(client, table).await? {
        *counts.entry(user_id).or_default() += 1;
    }

    for (user_id, _) in DATASET {
        println!("{user_id} {}", counts.remove(*user_id).unwrap_or(0));
    }
    for (user_id, count) in counts {
        println!("{user_id} {count}");
    }
    Ok(())
}

/// Prints the primary key of every item, sorted by user and sort key.
async fn print_keys(client: &Client, table: &str) -> Result<()> {
    let mut keys = scan_keys(client, table).await?;
    keys.sort();
    for (user_id, sort_key) in keys {
        println!("{user_id} {sort_key}");
    }
    Ok(())
}

/// Returns the `(user_id, learning_type)` key of every item, read with a consistent Scan.
async fn scan_keys(client: &Client, table: &str) -> Result<Vec<(String, String)>> {
    let mut keys = Vec::new();
    let mut start_key = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|error| format!("Scan {table} failed: {}", describe(error)))?;

        for item in page.items() {
            keys.push((
                string_attribute(item, "user_id")?,
                string_attribute(item, "learning_type")?,
            ));
        }

        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return Ok(keys),
        }
    }
}

/// Describes a failed request: the error code and message that the server returned, or the
/// whole error chain when the request got no service response, for example on a refused
/// connection.
fn describe<E, R>(error: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match error.as_service_error() {
        Some(service_error) => format!(
            "{}: {}",
            service_error.code().unwrap_or("unknown error code"),
            service_error.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(error).to_string(),
    }
}

fn string_attribute(item: &HashMap<String, AttributeValue>, name: &str) -> Result<String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        other => Err(
            format!("Scan returned an item without string attribute '{name}': {other:?}").into(),
        ),
    }
}
