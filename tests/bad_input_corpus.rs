//! The corpus of malformed and hostile inputs in tests/fixtures/bad_inputs.json:
//! each must get its documented 4xx with a `{detail, error_code}` body, and
//! delete nothing.

mod support;

use serde_json::Value;
use support::invariants::{check_request, snapshot_tables};
use support::*;

/// Applies a case's `expand` entries, which append a character many times to
/// a string in the event, so that oversized values need not be stored.
fn expanded_event(case: &Value) -> Value {
    let mut event = case["event"].clone();
    for expansion in case["expand"].as_array().into_iter().flatten() {
        let pointer = expansion["pointer"].as_str().unwrap();
        let repeat = expansion["repeat"].as_str().unwrap();
        let times = expansion["times"].as_u64().unwrap() as usize;
        let target = event
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer} in {}", case["name"]));
        let grown = format!("{}{}", target.as_str().unwrap(), repeat.repeat(times));
        *target = Value::String(grown);
    }
    event
}

#[tokio::test]
async fn every_bad_input_gets_its_4xx() {
    let corpus = read_json(&repository_root().join("tests/fixtures/bad_inputs.json"));
    let cases = corpus.as_array().unwrap();
    assert!(
        cases.len() >= 60,
        "the corpus has only {} cases",
        cases.len()
    );

    let client = dynamodb_client();
    let table = unique_table_name("bad_inputs");
    create_table(&client, &table).await;
    put_learnings(
        &client,
        &table,
        &[
            ("user-a", "user_profile"),
            ("user-a", "user_memory#1"),
            ("user-b", "user_profile"),
            ("user-b", "entity_memory#acme"),
            ("..", "user_profile"),
            ("user-a/user-b", "user_profile"),
        ],
        100,
    )
    .await;
    let before_tables = snapshot_tables(&client, &[&table]).await;
    let before = &before_tables[&table];
    let app = app_for_table(client.clone(), &table);
    let mut mismatches = Vec::new();

    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected = case["expected_status"].as_u64().unwrap();
        let response = invoke(&app, &expanded_event(case)).await;

        // No bad input may delete anything, so every case is checked without a scope.
        let after = snapshot_tables(&client, &[&table]).await;
        if let Err(broken) = check_request(&before_tables, &after, None, &response) {
            mismatches.push(format!("{name}: invariant broken: {broken}"));
            if after != before_tables {
                // Later cases would be checked against a table that this case
                // changed, so the report stops here.
                break;
            }
        }

        let status = status_of(&response);
        if status != expected {
            mismatches.push(format!("{name}: expected {expected}, got {status}"));
            continue;
        }
        assert!(
            (400..500).contains(&status),
            "{name}: {status} is not a 4xx"
        );
        let body = error_body(&response);
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["detail", "error_code"], "{name}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty()),
            "{name}: {body}"
        );
        assert!(body["error_code"].is_string(), "{name}: {body}");
        assert!(
            body.to_string().len() < 1_000,
            "{name}: the body echoes too much: {} bytes",
            body.to_string().len()
        );
        assert_eq!(after[&table], *before, "{name}: deleted something");
    }

    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
