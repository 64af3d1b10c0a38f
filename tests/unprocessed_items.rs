//! UnprocessedItems and throttling, which dynalite never produces, simulated
//! with aws-smithy-mocks, the SDK's own mocking tool.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use delete_learning_user::handler::App;
use delete_learning_user::store::{self, DeletionScope};
use serde_json::{Value, json};
use support::invariants::check_response;
use support::*;

const TABLE: &str = "agno_learnings";

const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;

/// Builds a client whose calls only the given rules serve, with the SDK's
/// standard retries (3 attempts) and millisecond backoff.
fn mocked_client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |config| {
        config.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(2)),
        )
    })
}

/// A Query that returns `count` learnings of user-a on one page.
fn query_returning(count: usize) -> Rule {
    mock!(Client::query).then_output(move || {
        let items = (0..count)
            .map(|index| {
                [
                    ("user_id".to_owned(), AttributeValue::S("user-a".to_owned())),
                    (
                        "learning_type".to_owned(),
                        AttributeValue::S(format!("entity_memory#{index}")),
                    ),
                ]
                .into()
            })
            .collect();
        QueryOutput::builder().set_items(Some(items)).build()
    })
}

fn requests_in(input: &BatchWriteItemInput) -> usize {
    input
        .request_items()
        .and_then(|items| items.get(TABLE))
        .map_or(0, Vec::len)
}

/// Processes only the first request of each of the first `unprocessed_calls`
/// calls and hands back the others, or the one request, as unprocessed. Later
/// calls process everything. Records the number of requests of each call.
fn batch_write_leaving_unprocessed(
    unprocessed_calls: usize,
    sizes: Arc<Mutex<Vec<usize>>>,
) -> Rule {
    mock!(Client::batch_write_item).then_compute_output(move |input| {
        let mut sizes = sizes.lock().unwrap();
        sizes.push(requests_in(input));

        let requests = input
            .request_items()
            .and_then(|items| items.get(TABLE))
            .cloned()
            .unwrap_or_default();
        if sizes.len() > unprocessed_calls {
            return BatchWriteItemOutput::builder().build();
        }
        let unprocessed = if requests.len() > 1 {
            requests[1..].to_vec()
        } else {
            requests
        };
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, unprocessed)
            .build()
    })
}

/// Sends a request by user-a for all of user-a's learnings through the
/// handler, and checks that the response is a documented one. The mocked
/// client has no table to snapshot, so the tests check the calls instead.
async fn delete_own_learnings(app: &App) -> Value {
    let response = invoke(app, &delete_by(json!({"sub": "user-a"}), "user-a", "")).await;
    if let Err(broken) = check_response(&response) {
        panic!("invariant broken: {broken}");
    }
    response
}

fn scope() -> DeletionScope<'static> {
    DeletionScope {
        table: TABLE,
        user_id: "user-a",
        learning_type: None,
    }
}

#[tokio::test]
async fn unprocessed_items_are_resent_until_done() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let query = query_returning(3);
    let batch_write = batch_write_leaving_unprocessed(2, sizes.clone());
    let client = mocked_client(&[&query, &batch_write]);

    let report = store::delete_learnings(&client, scope(), &fast_deletion(), None)
        .await
        .unwrap();

    assert_eq!(report.deleted, 3);
    assert_eq!(report.batches, 3);
    assert_eq!(report.unprocessed_retries, 2);
    assert_eq!(*sizes.lock().unwrap(), [3, 2, 1]);
}

#[tokio::test]
async fn lasting_unprocessed_items_give_500() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let query = query_returning(3);
    let batch_write = batch_write_leaving_unprocessed(usize::MAX, sizes.clone());
    let client = mocked_client(&[&query, &batch_write]);
    let app = app_for_table(client, TABLE);

    let response = delete_own_learnings(&app).await;

    assert_eq!(status_of(&response), 500);
    assert_eq!(
        error_body(&response),
        json!({"detail": "Internal server error (request id test-request-id)", "error_code": "INTERNAL_SERVER_ERROR"})
    );
    // fast_retry allows 4 attempts: two delete one item each, and the last item stays.
    assert_eq!(*sizes.lock().unwrap(), [3, 2, 1, 1]);
}

#[tokio::test]
async fn lasting_unprocessed_items_are_reported() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let query = query_returning(3);
    let batch_write = batch_write_leaving_unprocessed(usize::MAX, sizes);
    let client = mocked_client(&[&query, &batch_write]);

    let failure = store::delete_learnings(&client, scope(), &fast_deletion(), None)
        .await
        .unwrap_err();

    assert_eq!(failure.report.deleted, 2);
    assert_eq!(failure.report.batches, 4);
    assert!(matches!(
        failure.source,
        store::StoreError::Unprocessed {
            remaining: 1,
            attempts: 4
        }
    ));
}

#[tokio::test]
async fn throttled_batch_is_retried_by_sdk() {
    let query = query_returning(2);
    let batch_write = mock!(Client::batch_write_item)
        .sequence()
        .http_status(400, Some(THROTTLED.to_owned()))
        .times(2)
        .output(|| BatchWriteItemOutput::builder().build())
        .build();
    let client = mocked_client(&[&query, &batch_write]);

    let report = store::delete_learnings(&client, scope(), &fast_deletion(), None)
        .await
        .unwrap();

    assert_eq!(report.deleted, 2);
    assert_eq!(report.batches, 1);
    assert_eq!(batch_write.num_calls(), 3);
}

#[tokio::test]
async fn lasting_throttling_gives_500() {
    let query = query_returning(2);
    let batch_write = mock!(Client::batch_write_item)
        .sequence()
        .http_status(400, Some(THROTTLED.to_owned()))
        .repeatedly()
        .build();
    let client = mocked_client(&[&query, &batch_write]);
    let app = app_for_table(client, TABLE);

    let response = delete_own_learnings(&app).await;

    assert_eq!(status_of(&response), 500);
    let detail = error_body(&response)["detail"].as_str().unwrap().to_owned();
    assert!(!detail.contains("Throughput"), "{detail}");
    assert_eq!(batch_write.num_calls(), 3);
}

#[tokio::test]
async fn failed_query_deletes_nothing() {
    let query = mock!(Client::query)
        .sequence()
        .http_status(500, Some(r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}"#.to_owned()))
        .repeatedly()
        .build();
    let batch_write =
        mock!(Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
    let client = mocked_client(&[&query, &batch_write]);
    let app = app_for_table(client, TABLE);

    let response = delete_own_learnings(&app).await;

    assert_eq!(status_of(&response), 500);
    assert_eq!(query.num_calls(), 3);
    assert_eq!(batch_write.num_calls(), 0);
}

#[tokio::test]
async fn foreign_unprocessed_keys_are_not_sent() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let recorded = sizes.clone();
    let query = query_returning(2);
    let batch_write = mock!(Client::batch_write_item).then_compute_output(move |input| {
        let mut sizes = recorded.lock().unwrap();
        sizes.push(requests_in(input));
        if sizes.len() > 1 {
            return BatchWriteItemOutput::builder().build();
        }

        // A faulty response names a key of another user that was never sent.
        let mut unprocessed = input.request_items().unwrap()[TABLE][1..].to_vec();
        let mut foreign = unprocessed[0].clone();
        if let Some(delete) = foreign.delete_request.as_mut() {
            delete
                .key
                .insert("user_id".to_owned(), AttributeValue::S("user-b".to_owned()));
        }
        unprocessed.push(foreign);
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, unprocessed)
            .build()
    });
    let client = mocked_client(&[&query, &batch_write]);

    let report = store::delete_learnings(&client, scope(), &fast_deletion(), None)
        .await
        .unwrap();

    assert_eq!(*sizes.lock().unwrap(), [2, 1]);
    assert_eq!(report.deleted, 2);
}
