//! The store: deletion of a user's learnings from DynamoDB.
//!
//! The table's partition key is `user_id` and its sort key `learning_type`.
//! A sort key is the learning type alone (`user_profile`), or the type, `#`
//! and a record id (`entity_memory#acme`).
//!
//! The deletion is a pipeline of two halves that run concurrently in one task:
//! - the query half reads the user's partition page by page, fetching the next
//!   page while the current one's keys wait in a bounded queue of full batches;
//! - the write half keeps up to `DELETE_CONCURRENCY` BatchWriteItem calls of
//!   25 keys in flight.
//!
//! Memory is bounded by about two Query pages and the queue, whatever the
//! number of items, because keys are never all collected first.
//!
//! NOTE: the SDK parses each Query page into one map per item, about 500
//! bytes per key, so a full 1 MB page of 300-byte items takes about 2 MB of
//! heap while it is read. Peak memory therefore rises until a partition fills
//! one page, and stays flat beyond that.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest as DeleteKey, WriteRequest};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::attempts::{AttemptCounter, AttemptCounts};
use crate::config::DeletionConfig;
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

    /// Query returned an item without the string key attributes of the key
    /// schema, or from another partition than the one it asked for.
    #[error(
        "Query returned an item without string attributes '{PARTITION_KEY}' and '{SORT_KEY}' in the requested partition"
    )]
    MalformedKey,

    /// The invocation's remaining time fell under the deadline margin, so the
    /// deletion stopped before it had deleted everything.
    #[error("the invocation deadline was near, so the deletion stopped")]
    DeadlineReached,
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
    /// Items that BatchWriteItem confirmed deleted. After the deadline this is
    /// a lower bound, because calls still in flight then are abandoned.
    pub deleted: u64,
    /// Query calls.
    pub pages: u32,
    /// BatchWriteItem calls, retries included.
    pub batches: u32,
    /// BatchWriteItem calls that only resent unprocessed items.
    pub unprocessed_retries: u32,
    /// Attempts that the SDK retried, of Query and BatchWriteItem calls.
    pub sdk_retries: u32,
    /// Attempts that DynamoDB rejected with a throttling error.
    pub throttles: u32,
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

/// When a deletion must stop starting calls, and when it must stop waiting for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// No Query page, batch or resend starts after this instant.
    stop_dispatch: Instant,
    /// Calls still in flight at this instant are abandoned, so that the
    /// response reaches Lambda before the invocation times out.
    abandon: Instant,
}

impl Deadline {
    /// The time kept for the log line and the response after the last call.
    pub const RESPONSE_RESERVE: Duration = Duration::from_millis(200);

    /// Builds the deadline of an invocation that Lambda ends at `invocation_end`.
    /// New calls stop `margin` before it, and waiting stops
    /// [`Self::RESPONSE_RESERVE`] before it.
    pub fn new(invocation_end: Instant, margin: Duration) -> Self {
        let now = Instant::now();
        let earliest = |reserve: Duration| {
            invocation_end
                .checked_sub(reserve)
                .map_or(now, |instant| instant.max(now))
        };

        Self {
            stop_dispatch: earliest(margin.max(Self::RESPONSE_RESERVE)),
            abandon: earliest(Self::RESPONSE_RESERVE),
        }
    }
}

/// Returns whether no new call may start, because the deadline's margin has begun.
fn deadline_is_near(deadline: Option<&Deadline>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline.stop_dispatch)
}

/// Deletes every item in `scope` and returns what it did.
///
/// Without a learning type, every item of the user's partition goes. With one,
/// the item whose sort key equals the type goes, and every item whose sort key
/// starts with the type and `#`, and nothing else: `user` does not touch
/// `user_profile`, and `entity_memory` does not touch `entity_memory_v2#x`.
///
/// A clean run over N matching items makes exactly ceil(N / 25) BatchWriteItem
/// calls, and as many Query calls as DynamoDB's 1 MB page limit forces.
///
/// # Errors
/// Fails when a call fails after the SDK's retries, when unprocessed items
/// remain after `config.retry.max_attempts`, or when `deadline` comes near
/// first. The error carries what was deleted so far. Items never leave the
/// scope either way, so repeating the request deletes the rest.
pub async fn delete_learnings(
    client: &Client,
    scope: DeletionScope<'_>,
    config: &DeletionConfig,
    deadline: Option<Deadline>,
) -> Result<DeletionReport, DeletionError> {
    let progress = Progress::default();
    let concurrency = config.concurrency.max(1);

    // The queue contains full batches of sort keys only. The partition key is
    // the scope's user id for every item, so it is added back at dispatch.
    let (batches, queued) = mpsc::channel::<Vec<String>>(concurrency);
    let pipeline = async {
        let (queried, written) = tokio::join!(
            query_batches(client, scope, deadline.as_ref(), batches, &progress),
            write_batches(client, scope, config, deadline.as_ref(), queued, &progress),
        );
        // A write failure is reported first, because it closes the queue and so
        // also ends the query half early.
        written.and(queried)
    };
    let deletion_span = tracing::info_span!(
        target: crate::xray::TARGET,
        "delete_learnings",
        table = scope.table,
        fault = tracing::field::Empty
    );
    let pipeline = pipeline.instrument(deletion_span.clone());

    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.abandon.into(), pipeline)
            .await
            .unwrap_or(Err(StoreError::DeadlineReached)),
        None => pipeline.await,
    };
    deletion_span.record("fault", outcome.is_err());

    let report = progress.report();
    match outcome {
        Ok(()) => Ok(report),
        Err(source) => Err(DeletionError { report, source }),
    }
}

/// The counts of a running deletion, shared by its two halves.
#[derive(Debug, Default)]
struct Progress {
    deleted: AtomicU64,
    pages: AtomicU32,
    batches: AtomicU32,
    unprocessed_retries: AtomicU32,
    /// Counted by the interceptor that every call carries.
    attempts: Arc<AttemptCounts>,
}

impl Progress {
    fn report(&self) -> DeletionReport {
        DeletionReport {
            deleted: self.deleted.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            unprocessed_retries: self.unprocessed_retries.load(Ordering::Relaxed),
            sdk_retries: self.attempts.retries(),
            throttles: self.attempts.throttled(),
        }
    }

    fn attempt_counter(&self) -> AttemptCounter {
        AttemptCounter(self.attempts.clone())
    }
}

/// Reads the partition page by page and queues full batches of matching sort
/// keys, and the last partial batch at the end: the query half.
///
/// Returns `Ok` early when the write half closed the queue, because the write
/// half then reports why.
async fn query_batches(
    client: &Client,
    scope: DeletionScope<'_>,
    deadline: Option<&Deadline>,
    batches: mpsc::Sender<Vec<String>>,
    progress: &Progress,
) -> Result<(), StoreError> {
    if deadline_is_near(deadline) {
        return Err(StoreError::DeadlineReached);
    }
    let mut batch = Vec::with_capacity(MAX_BATCH_SIZE);
    let mut page = query_page(client, scope, None, progress).await?;
    progress.pages.fetch_add(1, Ordering::Relaxed);

    loop {
        let (sort_keys, next_start) = matching_sort_keys(page, scope)?;

        let Some(next_start) = next_start else {
            if !queue_sort_keys(&batches, &mut batch, sort_keys).await {
                return Ok(());
            }
            break;
        };
        if deadline_is_near(deadline) {
            return Err(StoreError::DeadlineReached);
        }

        // Fetch the next page while this page's batches wait for room in the queue.
        let (queued, next_page) = tokio::join!(
            queue_sort_keys(&batches, &mut batch, sort_keys),
            query_page(client, scope, Some(next_start), progress),
        );
        if !queued {
            return Ok(());
        }
        page = next_page?;
        progress.pages.fetch_add(1, Ordering::Relaxed);
    }

    if !batch.is_empty() {
        // An error means the write half has stopped, and it reports why.
        let _ = batches.send(batch).await;
    }
    Ok(())
}

/// Adds sort keys to the open batch and queues every batch that fills up.
/// Returns false when the write half has closed the queue.
async fn queue_sort_keys(
    batches: &mpsc::Sender<Vec<String>>,
    batch: &mut Vec<String>,
    sort_keys: Vec<String>,
) -> bool {
    for sort_key in sort_keys {
        // Query never returns a key twice, but BatchWriteItem rejects a batch
        // with duplicate keys outright, so guard against it anyway.
        if batch.contains(&sort_key) {
            continue;
        }
        batch.push(sort_key);

        if batch.len() == MAX_BATCH_SIZE {
            let full = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH_SIZE));
            if batches.send(full).await.is_err() {
                return false;
            }
        }
    }
    true
}

/// Keeps up to `config.concurrency` BatchWriteItem calls in flight until the
/// queue is closed and drained, or until a call fails: the write half.
async fn write_batches(
    client: &Client,
    scope: DeletionScope<'_>,
    config: &DeletionConfig,
    deadline: Option<&Deadline>,
    mut queued: mpsc::Receiver<Vec<String>>,
    progress: &Progress,
) -> Result<(), StoreError> {
    let concurrency = config.concurrency.max(1);
    let mut in_flight = FuturesUnordered::new();
    let mut failure = None;
    let mut receiving = true;

    loop {
        tokio::select! {
            batch = queued.recv(), if receiving && in_flight.len() < concurrency => match batch {
                Some(sort_keys) if deadline_is_near(deadline) => {
                    drop(sort_keys);
                    failure = Some(StoreError::DeadlineReached);
                    receiving = false;
                    queued.close();
                }
                Some(sort_keys) => in_flight.push(write_batch(
                    client, scope, sort_keys, config, deadline, progress,
                )),
                None => receiving = false,
            },
            Some(result) = in_flight.next() => {
                if let Err(error) = result {
                    // Let the other calls finish, but start no new one.
                    failure.get_or_insert(error);
                    receiving = false;
                    queued.close();
                }
            },
            else => break,
        }
    }

    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn query_page(
    client: &Client,
    scope: DeletionScope<'_>,
    start_key: Option<Key>,
    progress: &Progress,
) -> Result<QueryOutput, StoreError> {
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

    let call = query
        .customize()
        .interceptor(progress.attempt_counter())
        .send();
    traced_call("Query", scope.table, call).await
}

/// Awaits one DynamoDB call inside its span, which becomes an X-Ray
/// subsegment. The span's `fault` starts true and turns false when the call
/// succeeds, so that a call abandoned at the deadline shows as a fault too.
async fn traced_call<T, E>(
    operation: &'static str,
    table: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError>
where
    E: Into<aws_sdk_dynamodb::Error>,
{
    let span = tracing::info_span!(
        target: crate::xray::TARGET,
        "DynamoDB",
        operation,
        table,
        fault = true
    );
    let result = call.instrument(span.clone()).await;
    span.record("fault", result.is_err());

    result.map_err(|error| StoreError::Dynamo {
        operation,
        source: Box::new(error.into()),
    })
}

/// Takes the sort keys of a page's items that are in scope, and the key where
/// the next page starts. The page is consumed, so its items are freed here.
fn matching_sort_keys(
    page: QueryOutput,
    scope: DeletionScope<'_>,
) -> Result<(Vec<String>, Option<Key>), StoreError> {
    let items = page.items.unwrap_or_default();
    let mut sort_keys = Vec::with_capacity(items.len());

    for mut item in items {
        // A key from another partition would mean deleting another user's
        // learnings, so it stops the deletion instead of being skipped.
        match item.get(PARTITION_KEY) {
            Some(AttributeValue::S(user_id)) if user_id == scope.user_id => {}
            _ => return Err(StoreError::MalformedKey),
        }
        let Some(AttributeValue::S(sort_key)) = item.remove(SORT_KEY) else {
            return Err(StoreError::MalformedKey);
        };

        if matches_scope(&sort_key, scope.learning_type) {
            sort_keys.push(sort_key);
        }
    }

    // One Query page stops at 1 MB of data, and LastEvaluatedKey marks where the next starts.
    let next_start = page.last_evaluated_key.filter(|key| !key.is_empty());
    Ok((sort_keys, next_start))
}

/// Deletes one batch, resending unprocessed items with backoff.
async fn write_batch(
    client: &Client,
    scope: DeletionScope<'_>,
    sort_keys: Vec<String>,
    config: &DeletionConfig,
    deadline: Option<&Deadline>,
    progress: &Progress,
) -> Result<(), StoreError> {
    let table = scope.table;
    let retry = &config.retry;
    let mut requests = sort_keys
        .into_iter()
        .map(|sort_key| delete_request(scope.user_id, sort_key))
        .collect::<Result<Vec<_>, _>>()?;
    let mut attempt: u32 = 0;

    loop {
        let sent = requests.clone();
        let sent_count = sent.len();
        let call = client
            .batch_write_item()
            .request_items(table, requests)
            .customize()
            .interceptor(progress.attempt_counter())
            .send();
        let output = traced_call("BatchWriteItem", table, call).await?;
        progress.batches.fetch_add(1, Ordering::Relaxed);
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
        progress
            .deleted
            .fetch_add((sent_count - requests.len()) as u64, Ordering::Relaxed);

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
        progress.unprocessed_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;

        if deadline_is_near(deadline) {
            return Err(StoreError::DeadlineReached);
        }
    }
}

/// Returns whether a sort key belongs to the learning type: it equals the
/// type, or starts with the type and `#`. Every key matches when no type is given.
fn matches_scope(sort_key: &str, learning_type: Option<&str>) -> bool {
    let Some(learning_type) = learning_type else {
        return true;
    };

    match sort_key.strip_prefix(learning_type) {
        Some(rest) => rest.is_empty() || rest.starts_with(RECORD_SEPARATOR),
        None => false,
    }
}

fn delete_request(user_id: &str, sort_key: String) -> Result<WriteRequest, StoreError> {
    let key = Key::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(user_id.to_owned()),
        ),
        (SORT_KEY.to_owned(), AttributeValue::S(sort_key)),
    ]);
    let delete = DeleteKey::builder()
        .set_key(Some(key))
        .build()
        .map_err(|_| StoreError::MalformedKey)?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}
