//! DynamoDB calls that stall, because a proxy on 127.0.0.1 keeps requests
//! unanswered: the function's attempt timeout and retries, as configured.

mod support;

use std::time::Duration;

use delete_learning_user::config::DynamoDbConfig;
use delete_learning_user::store::{self, DeletionScope, StoreError};
use support::dynamo_proxy::DynamoProxy;
use support::*;

/// Returns the function's settings with a short attempt timeout, so that a
/// stalled call is retried within the test.
fn short_attempts(max_attempts: u32) -> DynamoDbConfig {
    DynamoDbConfig {
        attempt_timeout: Duration::from_millis(300),
        max_attempts,
        ..DynamoDbConfig::default()
    }
}

fn whole_partition(table: &str) -> DeletionScope<'_> {
    DeletionScope {
        table,
        user_id: "user-a",
        learning_type: None,
    }
}

async fn seeded_table(prefix: &str) -> (aws_sdk_dynamodb::Client, String, Snapshot) {
    let client = dynamodb_client();
    let table = unique_table_name(prefix);
    create_table(&client, &table).await;
    let sort_keys: Vec<String> = (0..60)
        .map(|index| format!("user_memory#{index:02}"))
        .collect();
    let mut keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|sort_key| ("user-a", sort_key.as_str()))
        .collect();
    keys.push(("user-b", "user_memory#00"));
    put_learnings(&client, &table, &keys, 100).await;
    let before = snapshot(&client, &table).await;
    (client, table, before)
}

#[tokio::test]
async fn stalled_call_is_retried() {
    let (client, table, before) = seeded_table("stalled").await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.hold_next("BatchWriteItem", 1);
    proxy.hold_next("Query", 1);
    let function_client = dynamodb_client_with(&proxy.endpoint, &short_attempts(3));

    let report = store::delete_learnings(
        &function_client,
        whole_partition(&table),
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.deleted, 60);
    // One held attempt of each operation, then the retries that went through.
    assert_eq!(proxy.count("Query"), 2);
    assert_eq!(proxy.count("BatchWriteItem"), 4);
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn stalled_attempts_fail_without_deleting() {
    let (client, table, before) = seeded_table("stalled_all").await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.hold("BatchWriteItem");
    let function_client = dynamodb_client_with(&proxy.endpoint, &short_attempts(2));

    let failure = store::delete_learnings(
        &function_client,
        whole_partition(&table),
        &fast_deletion(),
        None,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            failure.source,
            StoreError::Dynamo {
                operation: "BatchWriteItem",
                ..
            }
        ),
        "{:?}",
        failure.source
    );
    assert_eq!(failure.report.deleted, 0);
    // Three batches were in flight, each tried twice.
    assert_eq!(proxy.count("BatchWriteItem"), 6);
    assert_eq!(snapshot(&client, &table).await, before);
}
