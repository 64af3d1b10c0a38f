//! DynamoDB calls that stall, because a proxy on 127.0.0.1 keeps requests
//! unanswered: the function's attempt timeout and retries, as configured.

mod support;

use std::time::Duration;

use delete_learning_user::config::{DeletionConfig, DynamoDbConfig, RetryPolicy};
use delete_learning_user::store::{self, DeletionScope, StoreError};
use serde_json::json;
use support::dynamo_proxy::{DynamoProxy, Fault};
use support::invariants::{Scope, check_request, invoke_checked, snapshot_tables};
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
    assert_eq!(report.sdk_retries, 2);
    assert_eq!(report.throttles, 0);
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

#[tokio::test]
async fn seeded_faults_keep_invariants() {
    let mut statuses = Vec::new();
    let mut injected = 0;

    for seed in 0..24_u64 {
        let client = dynamodb_client();
        let table = unique_table_name("faults");
        create_table(&client, &table).await;
        let sort_keys: Vec<String> = (0..80)
            .map(|index| format!("user_memory#{index:02}"))
            .collect();
        let mut keys: Vec<(&str, &str)> = sort_keys
            .iter()
            .map(|sort_key| ("user-a", sort_key.as_str()))
            .collect();
        keys.extend([
            ("user-a", "user_memory"),
            ("user-a", "user_memory_v2#x"),
            ("user-a", "user_memoryx"),
            ("user-a", "user_profile"),
            ("user-a-2", "user_memory#00"),
            ("user-b", "user_memory#00"),
        ]);
        put_learnings(&client, &table, &keys, 300).await;
        let before = snapshot_tables(&client, &[&table]).await;

        let learning_type = (seed % 2 == 0).then_some("user_memory");
        let scope = Scope::new(&table, "user-a", learning_type);
        let raw_query = learning_type.map_or(String::new(), |learning_type| {
            format!("learning_type={learning_type}")
        });
        let event = delete_by(
            json!({"sub": "admin-1", "scope": "agent_os:admin"}),
            "user-a",
            &raw_query,
        );
        let proxy = DynamoProxy::start(&dynalite().endpoint).await;
        // Mild schedules let the SDK's retries recover, harsh ones make it give up.
        let fraction = [0.2, 0.5, 0.9][(seed % 3) as usize];
        proxy.inject_faults(seed, fraction, &Fault::ALL);
        proxy.set_slow_response(Duration::from_millis(800));
        let settings = DynamoDbConfig {
            attempt_timeout: Duration::from_millis(500),
            max_attempts: 3,
            ..DynamoDbConfig::default()
        };
        let app = app_for_table(dynamodb_client_with(&proxy.endpoint, &settings), &table);

        let response = invoke(&app, &event).await;

        let status = status_of(&response);
        assert!(
            status == 204 || status == 500,
            "seed {seed}: unexpected response {response}"
        );
        let after = snapshot_tables(&client, &[&table]).await;
        if let Err(broken) = check_request(&before, &after, Some(&scope), &response) {
            panic!("seed {seed}: invariant broken: {broken}");
        }

        // Without faults, a repeat finishes the job.
        proxy.stop_faults();
        let repeated = invoke(&app, &event).await;
        assert_eq!(status_of(&repeated), 204, "seed {seed}: repeat {repeated}");
        let final_state = snapshot_tables(&client, &[&table]).await;
        if let Err(broken) = check_request(&after, &final_state, Some(&scope), &repeated) {
            panic!("seed {seed}: invariant broken by the repeat: {broken}");
        }
        let outside = filtered(&before[&table], |user_id, sort_key| {
            !scope.contains(&table, user_id, sort_key)
        });
        assert_eq!(
            final_state[&table], outside,
            "seed {seed}: after the repeat"
        );

        statuses.push(status);
        injected += proxy.injected();
    }

    eprintln!("statuses {statuses:?}, {injected} faults injected");
    assert!(injected >= 24, "too few faults were injected: {injected}");
    // Requests on parallel connections may reach the proxy in another order
    // from run to run. But with 90% of requests failing and 3 attempts per
    // call, the harsh schedules practically always end in 500. The mild ones
    // end in 204, so both sets of checks run.
    assert!(statuses.contains(&204), "{statuses:?}");
    assert!(statuses.contains(&500), "{statuses:?}");
}

#[tokio::test]
async fn throttled_attempts_are_counted() {
    let (client, table, before) = seeded_table("throttled").await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.inject_faults(
        5,
        0.4,
        &[Fault::Throttling, Fault::ProvisionedThroughputExceeded],
    );
    let function_client = dynamodb_client_with(&proxy.endpoint, &short_attempts(20));

    let report = store::delete_learnings(
        &function_client,
        whole_partition(&table),
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.deleted, 60);
    assert!(proxy.injected() > 0, "no attempt was throttled");
    // Every injected fault is one throttled attempt that the SDK retried.
    assert_eq!(report.throttles, proxy.injected());
    assert_eq!(report.sdk_retries, proxy.injected());
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn unprocessed_writes_are_resent() {
    let (client, table, before) = seeded_table("unprocessed").await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.inject_faults(7, 0.5, &[Fault::Unprocessed]);
    let deletion = DeletionConfig {
        retry: RetryPolicy {
            max_attempts: 20,
            ..fast_retry()
        },
        ..fast_deletion()
    };

    let report = store::delete_learnings(
        &dynamodb_client_at(&proxy.endpoint),
        whole_partition(&table),
        &deletion,
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.deleted, 60);
    assert!(
        proxy.unprocessed_writes() > 0,
        "no write came back unprocessed"
    );
    // Three full batches, plus one resend per batch that kept writes back.
    assert!(proxy.count("BatchWriteItem") > 3);
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn unprocessed_writes_exhaust_retries() {
    let (client, table, before) = seeded_table("unprocessed_all").await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    // Every batch and every resend keeps at least one write back.
    proxy.inject_faults(11, 1.0, &[Fault::Unprocessed]);

    let failure = store::delete_learnings(
        &dynamodb_client_at(&proxy.endpoint),
        whole_partition(&table),
        &fast_deletion(),
        None,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(failure.source, StoreError::Unprocessed { .. }),
        "{:?}",
        failure.source
    );
    let after = snapshot(&client, &table).await;
    let left = filtered(&after, |user_id, _| user_id == "user-a");
    assert!(!left.is_empty());
    assert_eq!(60 - left.len() as u64, failure.report.deleted);
    assert_eq!(
        filtered(&after, |user_id, _| user_id != "user-a"),
        filtered(&before, |user_id, _| user_id != "user-a")
    );
    assert!(left.iter().all(|(key, item)| before.get(key) == Some(item)));
}

#[tokio::test]
async fn reset_faults_send_tcp_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.inject_faults(3, 1.0, &[Fault::ResetBeforeForwarding]);
    let address = proxy.endpoint.strip_prefix("http://").unwrap();
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();

    let request = "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-amz-target: DynamoDB_20120810.Query\r\ncontent-length: 2\r\n\r\n{}";
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = connection.read_to_end(&mut response).await;

    // A normal close would end the read with Ok and no bytes.
    let error = read.expect_err("the proxy closed the connection without a reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(proxy.injected(), 1);
}

#[tokio::test]
async fn missing_table_is_500_and_touches_nothing() {
    let (client, table, before) = seeded_table("present").await;
    // The configured table does not exist, so dynalite returns ResourceNotFoundException.
    let app = app_for_table(client.clone(), "agno_learnings_missing");
    let event = delete_by(
        json!({"sub": "admin-1", "scope": "agent_os:admin"}),
        "user-a",
        "",
    );

    // The request's target is the missing table, and the seeded one is the
    // table that must stay byte-identical.
    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &event,
        Some(&Scope::new("agno_learnings_missing", "user-a", None)),
    )
    .await;

    assert_eq!(status_of(&response), 500);
    let body = error_body(&response);
    assert_eq!(body["error_code"], "INTERNAL_SERVER_ERROR");
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("agno_learnings_missing"),
        "the detail must not expose the table: {body}"
    );
    assert_eq!(snapshot(&client, &table).await, before);
}
