//! The store: deletion of a user's learnings from DynamoDB.
//!
//! The table's partition key is `user_id` and its sort key `learning_type`.
//! A sort key is the learning type alone (`user_profile`), or the type, `#`
//! and a record id (`entity_memory#acme`). The deletion queries the user's
//! partition page by page and deletes the keys in batches of 25 as they
//! arrive, so memory stays bounded by one page and one batch.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest as DeleteKey, WriteRequest};

use crate::config::RetryPolicy;
use crate::request::RECORD_SEPARATOR;

/// The partition key attribute.
pub const PARTITION_KEY: &str = "user_id";

/// The sort key attribute.
pub const SORT_KEY: &str = "learning_type";

/// BatchWriteItem's maximum number of write requests per call.
pub const MAX_BATCH_SIZE: usize = 25;

/// A failure to delete everything that matched.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A DynamoDB call failed after the SDK's own retries.
    #[error("DynamoDB {operation} failed")]
    Dynamo {
        operation: &'static str,
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },

    /// BatchWriteItem kept handing back unprocessed items until the retries ran out.
    #[error("{remaining} items were still unprocessed after {attempts} BatchWriteItem attempts")]
    Unprocessed { remaining: usize, attempts: u32 },

    /// Query returned an item without the string key attributes of the key schema.
    #[error("Query returned an item without string attributes '{PARTITION_KEY}' and '{SORT_KEY}'")]
    MalformedKey,
}

/// The items to delete: the user's whole partition, or one learning type of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionScope<'a> {
    pub table: &'a str,
    pub user_id: &'a str,
    pub learning_type: Option<&'a str>,
}

/// The counts of a deletion, complete or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletionReport {
    /// Items that BatchWriteItem confirmed deleted.
    pub deleted: u64,
    /// Query calls.
    pub pages: u32,
    /// BatchWriteItem calls, retries included.
    pub batches: u32,
    /// BatchWriteItem calls that only resent unprocessed items.
    pub unprocessed_retries: u32,
}

/// A deletion that stopped before everything matching was deleted.
#[derive(Debug, thiserror::Error)]
#[error("deletion stopped after {} deleted items", report.deleted)]
pub struct DeletionError {
    /// The counts up to the failure.
    pub report: DeletionReport,
    #[source]
    pub source: StoreError,
}

/// A DynamoDB primary key: the partition and sort key attributes.
type Key = HashMap<String, AttributeValue>;

/// Deletes every item in `scope` and returns what it did.
///
/// Without a learning type, every item of the user's partition goes. With one,
/// the item whose sort key equals the type goes, and every item whose sort key
/// starts with the type and `#`, and nothing else: `user` does not touch
/// `user_profile`, and `entity_memory` does not touch `entity_memory_v2#x`.
///
/// # Errors
/// Fails when a call fails after the SDK's retries, or when unprocessed items
/// remain after `retry.max_attempts`. The error carries what was deleted so far.
pub async fn delete_learnings(
    client: &Client,
    scope: DeletionScope<'_>,
    retry: &RetryPolicy,
) -> Result<DeletionReport, DeletionError> {
    let mut report = DeletionReport::default();

    match delete_pages(client, scope, retry, &mut report).await {
        Ok(()) => Ok(report),
        Err(source) => Err(DeletionError { report, source }),
    }
}

async fn delete_pages(
    client: &Client,
    scope: DeletionScope<'_>,
    retry: &RetryPolicy,
    report: &mut DeletionReport,
) -> Result<(), StoreError> {
    let mut batch: Vec<Key> = Vec::with_capacity(MAX_BATCH_SIZE);
    let mut start_key: Option<Key> = None;

    loop {
        let page = query_page(client, scope, start_key.take()).await?;
        report.pages += 1;

        for item in page.items() {
            let key = key_of(item)?;
            if !matches_scope(&key, scope.learning_type) {
                continue;
            }
            // Query never returns a key twice, but BatchWriteItem rejects a
            // batch with duplicate keys outright, so guard against it anyway.
            if batch.contains(&key) {
                continue;
            }
            batch.push(key);

            if batch.len() == MAX_BATCH_SIZE {
                write_batch(
                    client,
                    scope.table,
                    std::mem::take(&mut batch),
                    retry,
                    report,
                )
                .await?;
            }
        }

        // One Query page stops at 1 MB of data, and LastEvaluatedKey marks where the next starts.
        match page.last_evaluated_key {
            Some(last_key) if !last_key.is_empty() => start_key = Some(last_key),
            _ => break,
        }
    }

    if !batch.is_empty() {
        write_batch(client, scope.table, batch, retry, report).await?;
    }
    Ok(())
}

async fn query_page(
    client: &Client,
    scope: DeletionScope<'_>,
    start_key: Option<Key>,
) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, StoreError> {
    let mut query = client
        .query()
        .table_name(scope.table)
        .consistent_read(true)
        .projection_expression("#pk, #sk")
        .expression_attribute_names("#pk", PARTITION_KEY)
        .expression_attribute_names("#sk", SORT_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(scope.user_id.to_owned()))
        .set_exclusive_start_key(start_key);

    query = match scope.learning_type {
        None => query.key_condition_expression("#pk = :pk"),
        Some(learning_type) => {
            // DynamoDB orders strings by their UTF-8 bytes, and '$' follows '#',
            // so every sort key that equals the type or starts with "type#" lies
            // in [type, type$]. A filter expression may not name a key
            // attribute, so `matches_scope` drops the few other keys of that
            // range, such as "type!" or "type$" itself, on this side.
            query
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :type AND :upper")
                .expression_attribute_values(":type", AttributeValue::S(learning_type.to_owned()))
                .expression_attribute_values(
                    ":upper",
                    AttributeValue::S(format!("{learning_type}$")),
                )
        }
    };

    query.send().await.map_err(|error| StoreError::Dynamo {
        operation: "Query",
        source: Box::new(error.into()),
    })
}

/// Deletes one batch, resending unprocessed items with backoff.
async fn write_batch(
    client: &Client,
    table: &str,
    keys: Vec<Key>,
    retry: &RetryPolicy,
    report: &mut DeletionReport,
) -> Result<(), StoreError> {
    let mut requests = keys
        .into_iter()
        .map(delete_request)
        .collect::<Result<Vec<_>, _>>()?;
    let mut attempt: u32 = 0;

    loop {
        let sent = requests.clone();
        let sent_count = sent.len();
        let output = client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(|error| StoreError::Dynamo {
                operation: "BatchWriteItem",
                source: Box::new(error.into()),
            })?;
        report.batches += 1;
        attempt += 1;

        // Resend only what this call sent, so that a faulty response can never
        // make the function delete a key that its Query did not return.
        let unprocessed = output
            .unprocessed_items
            .and_then(|mut unprocessed| unprocessed.remove(table))
            .unwrap_or_default();
        requests = sent
            .into_iter()
            .filter(|request| unprocessed.contains(request))
            .collect();
        report.deleted += (sent_count - requests.len()) as u64;

        if requests.is_empty() {
            return Ok(());
        }
        if attempt >= retry.max_attempts {
            return Err(StoreError::Unprocessed {
                remaining: requests.len(),
                attempts: attempt,
            });
        }

        let delay = retry.backoff(attempt - 1);
        tracing::warn!(
            table,
            unprocessed = requests.len(),
            attempt,
            delay_ms = delay.as_millis() as u64,
            "BatchWriteItem returned unprocessed items; retrying"
        );
        report.unprocessed_retries += 1;
        tokio::time::sleep(delay).await;
    }
}

/// Returns whether a key belongs to the learning type: its sort key equals
/// the type, or starts with the type and `#`. Every key matches when no type is given.
fn matches_scope(key: &Key, learning_type: Option<&str>) -> bool {
    let Some(learning_type) = learning_type else {
        return true;
    };
    let Some(AttributeValue::S(sort_key)) = key.get(SORT_KEY) else {
        return false;
    };

    match sort_key.strip_prefix(learning_type) {
        Some(rest) => rest.is_empty() || rest.starts_with(RECORD_SEPARATOR),
        None => false,
    }
}

fn key_of(item: &HashMap<String, AttributeValue>) -> Result<Key, StoreError> {
    let mut key = Key::with_capacity(2);
    for attribute in [PARTITION_KEY, SORT_KEY] {
        match item.get(attribute) {
            Some(value @ AttributeValue::S(_)) => key.insert(attribute.to_owned(), value.clone()),
            _ => return Err(StoreError::MalformedKey),
        };
    }
    Ok(key)
}

fn delete_request(key: Key) -> Result<WriteRequest, StoreError> {
    let delete = DeleteKey::builder()
        .set_key(Some(key))
        .build()
        .map_err(|_| StoreError::MalformedKey)?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}
