//! DynamoDB clients and calls shared by the dataset and the in-process runners.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};

use crate::BenchResult;

/// The table's partition key attribute.
pub const PARTITION_KEY: &str = "user_id";

/// The table's sort key attribute.
pub const SORT_KEY: &str = "learning_type";

/// BatchWriteItem's maximum number of write requests per call.
pub const BATCH_SIZE: usize = 25;

/// BatchWriteItem calls for one batch before the bench gives up on its unprocessed items.
const MAX_BATCH_ATTEMPTS: u32 = 10;

/// A DynamoDB primary key.
pub type Key = HashMap<String, AttributeValue>;

/// Builds a client for `endpoint` on 127.0.0.1, with the dummy credentials and
/// region that the bench gives every client. The configuration reads nothing
/// from the environment or from profile files, so no setting can point it elsewhere.
pub fn client_for(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        .build();
    Client::from_conf(config)
}

/// Returns the key of a user's item.
pub fn key(user_id: &str, sort_key: &str) -> Key {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(user_id.to_owned()),
        ),
        (SORT_KEY.to_owned(), AttributeValue::S(sort_key.to_owned())),
    ])
}

/// Builds the delete request of one key.
pub fn delete_request(key: Key) -> BenchResult<WriteRequest> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(|error| format!("invalid delete request: {error}"))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Queries one page of a user's keys, keys only and strongly consistent, as the function does.
pub async fn query_key_page(
    client: &Client,
    table: &str,
    user_id: &str,
    start_key: Option<Key>,
) -> BenchResult<QueryOutput> {
    client
        .query()
        .table_name(table)
        .consistent_read(true)
        .key_condition_expression("#pk = :pk")
        .projection_expression("#pk, #sk")
        .expression_attribute_names("#pk", PARTITION_KEY)
        .expression_attribute_names("#sk", SORT_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(user_id.to_owned()))
        .set_exclusive_start_key(start_key)
        .send()
        .await
        .map_err(|error| format!("Query on {table} failed: {}", DisplayErrorContext(error)).into())
}

/// Returns the key attributes of a queried item.
pub fn key_of(item: &HashMap<String, AttributeValue>) -> BenchResult<Key> {
    let mut key = Key::with_capacity(2);
    for attribute in [PARTITION_KEY, SORT_KEY] {
        let value = item
            .get(attribute)
            .ok_or_else(|| format!("Query returned an item without {attribute}"))?;
        key.insert(attribute.to_owned(), value.clone());
    }
    Ok(key)
}

/// Sends one BatchWriteItem batch and resends its UnprocessedItems until none
/// are left. Returns the number of calls.
pub async fn write_batch(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> BenchResult<u32> {
    let mut pending = requests;
    let mut calls = 0;
    while !pending.is_empty() {
        if calls == MAX_BATCH_ATTEMPTS {
            return Err(format!(
                "{} write requests on {table} were still unprocessed after {MAX_BATCH_ATTEMPTS} BatchWriteItem calls",
                pending.len()
            )
            .into());
        }
        if calls > 0 {
            // A short growing pause, so that resends do not hammer a busy server.
            tokio::time::sleep(Duration::from_millis(10 * u64::from(calls))).await;
        }

        let output = client
            .batch_write_item()
            .request_items(table, pending)
            .send()
            .await
            .map_err(|error| {
                format!(
                    "BatchWriteItem on {table} failed: {}",
                    DisplayErrorContext(error)
                )
            })?;
        calls += 1;
        pending = output
            .unprocessed_items
            .and_then(|mut unprocessed| unprocessed.remove(table))
            .unwrap_or_default();
    }
    Ok(calls)
}
