//! The deletion pipeline against dynalite behind a counting proxy: the exact
//! number of requests on the wire, and the stop before the invocation deadline.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use delete_learning_user::config::DeletionConfig;
use delete_learning_user::store::{self, DeletionScope};
use serde_json::json;
use support::dynamo_proxy::DynamoProxy;
use support::invariants::{Scope, assert_invariants, invoke_checked, snapshot_tables};
use support::*;

/// About 300 bytes per item with the keys, as the benchmark uses.
const PAYLOAD_BYTES: usize = 250;

fn admin_claims() -> serde_json::Value {
    json!({"sub": "admin-1", "scope": "agent_os:admin"})
}

/// Counts the pages of a plain paginated Query over the same key range, the
/// whole partition or one type's range: the pages that DynamoDB's 1 MB limit forces.
async fn forced_pages(
    client: &Client,
    table: &str,
    user_id: &str,
    learning_type: Option<&str>,
) -> u32 {
    let mut pages = 0;
    let mut start_key = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .expression_attribute_values(":pk", AttributeValue::S(user_id.to_owned()))
            .set_exclusive_start_key(start_key);
        query = match learning_type {
            None => query.key_condition_expression("user_id = :pk"),
            Some(learning_type) => query
                .key_condition_expression("user_id = :pk AND learning_type BETWEEN :low AND :high")
                .expression_attribute_values(":low", AttributeValue::S(learning_type.to_owned()))
                .expression_attribute_values(
                    ":high",
                    AttributeValue::S(format!("{learning_type}$")),
                ),
        };
        let page = query.send().await.unwrap();
        pages += 1;
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => return pages,
        }
    }
}

/// Seeds `count` learnings of one type for user-a, with prefix traps of the
/// same user and a neighbour user around them.
async fn seeded_large_table(prefix: &str, learning_type: &str, count: usize) -> (Client, String) {
    let client = dynamodb_client();
    let table = unique_table_name(prefix);
    create_table(&client, &table).await;

    let sort_keys: Vec<String> = (0..count)
        .map(|index| format!("{learning_type}#{index:06}"))
        .collect();
    let mut keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|sort_key| ("user-a", sort_key.as_str()))
        .collect();
    let traps = format!("{learning_type}_v2#x");
    let neighbour = format!("{learning_type}#000001");
    keys.extend([
        ("user-a", "user_profile"),
        ("user-a", traps.as_str()),
        ("user-a-2", neighbour.as_str()),
        ("user-b", neighbour.as_str()),
    ]);
    put_learnings(&client, &table, &keys, PAYLOAD_BYTES).await;
    (client, table)
}

#[tokio::test]
async fn one_type_makes_exact_request_counts() {
    let items = 4_010;
    let (client, table) = seeded_large_table("counts", "user_memory", items).await;
    let pages = forced_pages(&client, &table, "user-a", Some("user_memory")).await;
    assert!(pages >= 2, "the seed must span Query pages, got {pages}");
    let before = snapshot(&client, &table).await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;

    let report = store::delete_learnings(
        &dynamodb_client_at(&proxy.endpoint),
        DeletionScope {
            table: &table,
            user_id: "user-a",
            learning_type: Some("user_memory"),
        },
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    let expected_batches = items.div_ceil(25) as u32;
    assert_eq!(proxy.count("BatchWriteItem"), expected_batches);
    assert_eq!(proxy.count("Query"), pages);
    assert_eq!(report.batches, expected_batches);
    assert_eq!(report.pages, pages);
    assert_eq!(report.deleted, items as u64);
    assert_eq!(report.unprocessed_retries, 0);
    let after = snapshot(&client, &table).await;
    assert_eq!(
        after,
        filtered(&before, |user_id, sort_key| {
            user_id != "user-a" || !sort_key.starts_with("user_memory#")
        })
    );
}

#[tokio::test]
async fn every_concurrency_makes_same_requests() {
    for concurrency in [1, 3, 64] {
        // About 1.2 MB, so the partition spans two Query pages.
        let items = 4_030;
        let (client, table) = seeded_large_table("concurrency", "entity_memory", items).await;
        let pages = forced_pages(&client, &table, "user-a", None).await;
        assert!(pages >= 2, "the seed must span Query pages, got {pages}");
        let before = snapshot(&client, &table).await;
        let proxy = DynamoProxy::start(&dynalite().endpoint).await;
        let config = DeletionConfig {
            concurrency,
            ..fast_deletion()
        };

        let report = store::delete_learnings(
            &dynamodb_client_at(&proxy.endpoint),
            DeletionScope {
                table: &table,
                user_id: "user-a",
                learning_type: None,
            },
            &config,
            None,
        )
        .await
        .unwrap();

        // The whole partition: the seeded items and the two same-user traps.
        let expected_items = items + 2;
        assert_eq!(
            proxy.count("BatchWriteItem"),
            expected_items.div_ceil(25) as u32,
            "concurrency {concurrency}"
        );
        assert_eq!(proxy.count("Query"), pages, "concurrency {concurrency}");
        assert_eq!(
            report.deleted, expected_items as u64,
            "concurrency {concurrency}"
        );
        let after = snapshot(&client, &table).await;
        assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
    }
}

#[tokio::test]
async fn deadline_inside_margin_deletes_nothing() {
    let (client, table) = seeded_large_table("margin", "user_memory", 60).await;
    let before_tables = snapshot_tables(&client, &[&table]).await;
    let before = &before_tables[&table];
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    let app = app_for_table(dynamodb_client_at(&proxy.endpoint), &table);
    let event = delete_by(admin_claims(), "user-a", "");
    let scope = Scope::new(&table, "user-a", None);

    // The default margin is 1 s, so 300 ms left is already too little.
    let invocation_end = Instant::now() + Duration::from_millis(300);
    let handled = invoke_before(&app, &event, "request-late", invocation_end).await;
    let response = handled.response;

    let after_request = snapshot_tables(&client, &[&table]).await;
    assert_invariants(&before_tables, &after_request, Some(&scope), &response);
    assert_eq!(status_of(&response), 500);
    let body = error_body(&response);
    assert_eq!(body["error_code"], "INTERNAL_SERVER_ERROR");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("after deleting 0 learnings"), "{detail}");
    assert!(detail.contains("repeat the request"), "{detail}");
    assert_eq!(proxy.count("Query"), 0);
    assert_eq!(proxy.count("BatchWriteItem"), 0);
    assert_eq!(snapshot(&client, &table).await, *before);

    let repeated = invoke_checked(&app, &client, &[&table], &event, Some(&scope)).await;

    assert_eq!(status_of(&repeated), 204);
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn stuck_batches_are_abandoned_before_deadline() {
    let (client, table) = seeded_large_table("stuck", "user_memory", 200).await;
    let before_tables = snapshot_tables(&client, &[&table]).await;
    let before = &before_tables[&table];
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.hold("BatchWriteItem");
    let app = app_for_table(dynamodb_client_at(&proxy.endpoint), &table);
    let event = delete_by(admin_claims(), "user-a", "");
    let scope = Scope::new(&table, "user-a", None);

    // BatchWriteItem never responds, so only the deadline can end this request.
    // The outer timeout turns a hang into a failure instead of a stuck suite.
    let invocation_end = Instant::now() + Duration::from_millis(1_500);
    let handled = tokio::time::timeout(
        Duration::from_secs(30),
        invoke_before(&app, &event, "request-stuck", invocation_end),
    )
    .await
    .expect("the handler returns with a response instead of hanging");
    let response = handled.response;

    let after_request = snapshot_tables(&client, &[&table]).await;
    assert_invariants(&before_tables, &after_request, Some(&scope), &response);
    assert_eq!(status_of(&response), 500);
    let detail = error_body(&response)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("after deleting 0 learnings"), "{detail}");
    assert!(proxy.count("BatchWriteItem") >= 1);
    assert!(
        proxy.count("BatchWriteItem") <= 8,
        "at most DELETE_CONCURRENCY calls start"
    );
    assert_eq!(snapshot(&client, &table).await, *before);

    let direct = app_for_table(client.clone(), &table);
    let repeated = invoke_checked(&direct, &client, &[&table], &event, Some(&scope)).await;

    assert_eq!(status_of(&repeated), 204);
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn deadline_stops_large_deletion_and_repeat_finishes() {
    let items = 30_000;
    let (client, table) = seeded_large_table("large_deadline", "user_memory", items).await;
    // Each snapshot scans about 9 MB, so the two requests share the midway
    // snapshot and are checked by hand instead of with invoke_checked.
    let before_tables = snapshot_tables(&client, &[&table]).await;
    let before = &before_tables[&table];
    let app = app_for_table(client.clone(), &table);
    let event = delete_by(admin_claims(), "user-a", "");
    let scope = Scope::new(&table, "user-a", None);

    // With the default 1 s margin, new calls stop 0.5 s in, which is far less
    // than dynalite needs for 30,000 deletes.
    let invocation_end = Instant::now() + Duration::from_millis(1_500);
    let handled = tokio::time::timeout(
        Duration::from_secs(30),
        invoke_before(&app, &event, "request-large", invocation_end),
    )
    .await
    .expect("the handler returns with a response instead of hanging");
    let response = handled.response;

    let midway_tables = snapshot_tables(&client, &[&table]).await;
    assert_invariants(&before_tables, &midway_tables, Some(&scope), &response);
    assert_eq!(status_of(&response), 500);
    let detail = error_body(&response)["detail"].as_str().unwrap().to_owned();
    let deleted: usize = detail
        .split("after deleting ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no deleted count in {detail}"));
    assert!(deleted > 0, "{detail}");
    assert!(deleted < items, "{detail}");
    let audit = &handled.audit;
    assert_eq!(audit["Outcome"], "DeadlineReached");
    assert_eq!(audit["DeletedItems"], deleted as u64);
    assert_eq!(audit["deleted"], deleted as u64);
    assert_eq!(audit["level"], "ERROR");
    assert!(
        audit["trace_id"]
            .as_str()
            .is_some_and(|trace| trace.starts_with("Root="))
    );
    let midway = &midway_tables[&table];
    let left = sort_keys_of(midway, "user-a")
        .iter()
        .filter(|sort_key| sort_key.starts_with("user_memory#"))
        .count();
    // Calls abandoned at the deadline may have deleted more than reported, never less.
    assert!(
        left <= items - deleted,
        "{left} left after {deleted} reported"
    );
    assert_eq!(
        filtered(midway, |user_id, _| user_id != "user-a"),
        filtered(before, |user_id, _| user_id != "user-a")
    );

    let repeated = invoke(&app, &event).await;

    let after_tables = snapshot_tables(&client, &[&table]).await;
    assert_invariants(&midway_tables, &after_tables, Some(&scope), &repeated);
    assert_eq!(status_of(&repeated), 204);
    let after = &after_tables[&table];
    assert_eq!(*after, filtered(before, |user_id, _| user_id != "user-a"));
}
