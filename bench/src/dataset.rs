//! The bench table: the bench user's items, reseeded before every run, among
//! other users' items that no run may touch.
//!
//! Seeding and checking go straight to dynalite, not through the proxy, so
//! they are neither delayed nor counted.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, Select, TableStatus, WriteRequest,
};
use tokio::task::JoinSet;

use crate::BenchResult;
use crate::dynamodb::{self, BATCH_SIZE, PARTITION_KEY, SORT_KEY};

/// The user whose items every run deletes.
pub const BENCH_USER: &str = "bench-user";

/// Users whose items must survive every run. The first one's id starts with
/// the bench user's id, so a deletion that matched ids by prefix would show.
pub const OTHER_USERS: [&str; 10] = [
    "bench-user-2",
    "other-user-01",
    "other-user-02",
    "other-user-03",
    "other-user-04",
    "other-user-05",
    "other-user-06",
    "other-user-07",
    "other-user-08",
    "other-user-09",
];

/// Items of each other user.
pub const OTHER_USER_ITEMS: usize = 1000;

/// Size of each item in DynamoDB's accounting: attribute names plus values.
pub const ITEM_BYTES: usize = 300;

/// The padding attribute that brings each item to ITEM_BYTES.
const PADDING: &str = "content";

/// BatchWriteItem calls in flight while seeding.
const SEED_CONCURRENCY: usize = 16;

/// The bench table on dynalite, with a client that talks to dynalite directly.
pub struct Dataset {
    pub table: String,
    client: Client,
}

impl Dataset {
    /// Creates the table with the function's key schema and seeds the other users.
    pub async fn create(client: Client, table: &str) -> BenchResult<Self> {
        create_table(&client, table).await?;
        let dataset = Self {
            table: table.to_owned(),
            client,
        };
        for user in OTHER_USERS {
            dataset
                .put_items(user, &sort_keys(OTHER_USER_ITEMS))
                .await?;
        }
        dataset.check_other_users().await?;
        Ok(dataset)
    }

    /// Writes `count` items for the bench user and checks that exactly they are there.
    pub async fn seed_bench_user(&self, count: usize) -> BenchResult<()> {
        self.put_items(BENCH_USER, &sort_keys(count)).await?;
        let found = self.count_items(BENCH_USER).await?;
        if found != count as u64 {
            return Err(format!(
                "seeding failed: {BENCH_USER} has {found} items in {}, expected {count}",
                self.table
            )
            .into());
        }
        Ok(())
    }

    /// Checks, after a run, that the bench user has no items left and that
    /// every other user still has all of theirs.
    pub async fn check_after_run(&self, runner: &str) -> BenchResult<()> {
        let left = self.count_items(BENCH_USER).await?;
        if left != 0 {
            return Err(format!(
                "{runner} left {left} of {BENCH_USER}'s items in {}: the deletion was incomplete",
                self.table
            )
            .into());
        }
        self.check_other_users()
            .await
            .map_err(|error| format!("after {runner}: {error}").into())
    }

    async fn check_other_users(&self) -> BenchResult<()> {
        for user in OTHER_USERS {
            let found = self.count_items(user).await?;
            if found != OTHER_USER_ITEMS as u64 {
                return Err(format!(
                    "{user} has {found} items in {}, expected {OTHER_USER_ITEMS}: another user's items were deleted",
                    self.table
                )
                .into());
            }
        }
        Ok(())
    }

    /// Counts a user's items with strongly consistent Query pages.
    async fn count_items(&self, user_id: &str) -> BenchResult<u64> {
        let mut total = 0;
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .select(Select::Count)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", AttributeValue::S(user_id.to_owned()))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|error| {
                    format!(
                        "counting {user_id}'s items in {} failed: {}",
                        self.table,
                        DisplayErrorContext(error)
                    )
                })?;
            total += u64::try_from(page.count).unwrap_or(0);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(total),
            }
        }
    }

    /// Writes one item per sort key with concurrent BatchWriteItem calls.
    async fn put_items(&self, user_id: &str, sort_keys: &[String]) -> BenchResult<()> {
        let mut batches = Vec::new();
        for chunk in sort_keys.chunks(BATCH_SIZE) {
            let mut batch = Vec::with_capacity(chunk.len());
            for sort_key in chunk {
                batch.push(put_request(user_id, sort_key)?);
            }
            batches.push(batch);
        }

        let queue = Arc::new(Mutex::new(batches));
        let mut workers = JoinSet::new();
        for _ in 0..SEED_CONCURRENCY {
            let queue = queue.clone();
            let client = self.client.clone();
            let table = self.table.clone();
            workers.spawn(async move {
                while let Some(batch) = next_batch(&queue) {
                    dynamodb::write_batch(&client, &table, batch).await?;
                }
                BenchResult::Ok(())
            });
        }
        while let Some(joined) = workers.join_next().await {
            joined.map_err(|error| format!("a seeding task failed: {error}"))??;
        }
        Ok(())
    }
}

/// Returns the bench's sort keys for `count` items: alternately a user memory
/// and an entity memory, as `<type>#<number>`.
pub fn sort_keys(count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let learning_type = if index % 2 == 0 {
                "user_memory"
            } else {
                "entity_memory"
            };
            format!("{learning_type}#{index:07}")
        })
        .collect()
}

/// Takes the next batch from a queue shared by worker tasks.
pub fn next_batch(queue: &Mutex<Vec<Vec<WriteRequest>>>) -> Option<Vec<WriteRequest>> {
    // A worker that panicked leaves the queue itself intact.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
}

fn put_request(user_id: &str, sort_key: &str) -> BenchResult<WriteRequest> {
    let key_bytes = PARTITION_KEY.len() + user_id.len() + SORT_KEY.len() + sort_key.len();
    let padding = "x".repeat(ITEM_BYTES.saturating_sub(key_bytes + PADDING.len()));
    let put = PutRequest::builder()
        .item(PARTITION_KEY, AttributeValue::S(user_id.to_owned()))
        .item(SORT_KEY, AttributeValue::S(sort_key.to_owned()))
        .item(PADDING, AttributeValue::S(padding))
        .build()
        .map_err(|error| format!("invalid put request: {error}"))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

async fn create_table(client: &Client, table: &str) -> BenchResult<()> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|error| format!("invalid attribute definition: {error}"))
    };
    let key_element = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|error| format!("invalid key schema: {error}"))
    };

    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY)?)
        .attribute_definitions(attribute(SORT_KEY)?)
        .key_schema(key_element(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key_element(SORT_KEY, KeyType::Range)?)
        .send()
        .await
        .map_err(|error| {
            format!(
                "CreateTable {table} on dynalite failed: {}",
                DisplayErrorContext(error)
            )
        })?;

    // dynalite is started with createTableMs 0, but the table still becomes ACTIVE a moment later.
    for _ in 0..500 {
        let description = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|error| {
                format!(
                    "DescribeTable {table} failed: {}",
                    DisplayErrorContext(error)
                )
            })?;
        if description.table().and_then(|table| table.table_status()) == Some(&TableStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(format!("table {table} did not become ACTIVE within 5 s").into())
}
