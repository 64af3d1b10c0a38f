//! Every sample event in events/ runs through the handler against dynalite
//! and gets the status recorded for it in events/expected.json.

mod support;

use std::collections::BTreeMap;

use delete_learning_user::config::Config;
use delete_learning_user::handler::App;
use support::invariants::{Scope, invoke_checked};
use support::*;

/// The learnings that the demo seeds, which the sample events target.
const DEMO_LEARNINGS: &[(&str, &str)] = &[
    ("user-a", "user_profile"),
    ("user-a", "user_memory"),
    ("user-a", "entity_memory#acme"),
    ("user-a", "entity_memory#globex"),
    ("user-a", "session_context"),
    ("user-a", "decision_log#2026-11-30-001"),
    ("user-b", "user_profile"),
    ("user-b", "user_memory"),
    ("user-b", "learned_knowledge#k1"),
    ("idp|user-c", "user_profile"),
    ("idp|user-c", "user_memory"),
    ("user-d", "user_profile"),
    ("user-d", "user_memory"),
    ("user-d", "entity_memory"),
    ("user-d", "entity_memory#acme"),
    ("user-d", "entity_memory_v2#acme"),
    ("user-e", "user_profile"),
    ("user-e", "decision_log#d1"),
    ("user-e", "decision_log#d2"),
    ("user-f", "user_profile"),
    ("user-g", "user_profile"),
    ("user-g", "entity_memory#acme"),
    ("user-g", "entity_memory#globex"),
];

/// Returns the user id and learning type whose learnings a sample event may
/// delete, or None for an event that the function must reject. The ALB event
/// sends `entity%5Fmemory`, which decodes to `entity_memory`.
fn target_of(file: &str) -> Option<(&'static str, Option<&'static str>)> {
    match file {
        "http-api-self.json" => Some(("user-a", None)),
        "http-api-admin.json" => Some(("user-b", None)),
        "http-api-learning-type.json" => Some(("user-d", Some("entity_memory"))),
        "rest-cognito-self.json" => Some(("idp|user-c", None)),
        "rest-cognito-admin-group.json" => Some(("user-e", None)),
        "rest-api-bearer.json"
        | "http-api-bearer.json"
        | "function-url-bearer.json"
        | "alb-bearer.json" => Some(("user-g", Some("entity_memory"))),
        "http-api-other-user.json" | "http-api-no-identity.json" => None,
        other => panic!(
            "target_of lists no target for {other}. Add the user id and learning type that it deletes, or None if the function must reject it"
        ),
    }
}

fn expected_statuses() -> BTreeMap<String, u64> {
    let expected = read_json(&repository_root().join("events/expected.json"));
    serde_json::from_value(expected).expect("events/expected.json maps file names to statuses")
}

#[test]
fn every_event_has_an_expected_status() {
    let expected = expected_statuses();
    let mut files: Vec<String> = std::fs::read_dir(repository_root().join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && name != "expected.json")
        .collect();
    files.sort();

    assert!(!files.is_empty());
    assert_eq!(files, expected.keys().cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn sample_events_get_recorded_status() {
    let client = dynamodb_client();
    let table = unique_table_name("samples");
    create_table(&client, &table).await;
    put_learnings(&client, &table, DEMO_LEARNINGS, 200).await;
    let before = snapshot(&client, &table).await;
    // The Bearer-token events carry tokens signed by the test-only RSA key.
    let public_key = support::tokens::key_pem("rsa-public.pem");
    let mut config = Config::from_lookup(|name| match name {
        "LEARNINGS_TABLE" => Some(table.clone()),
        "JWT_VERIFICATION_KEY" => Some(public_key.clone()),
        _ => None,
    })
    .unwrap();
    config.deletion = fast_deletion();
    let app = App::new(config, client.clone());

    // The events that target the same user send the same request through
    // different front ends, so their order does not matter either.
    for (file, expected) in expected_statuses() {
        let event = read_json(&repository_root().join("events").join(&file));
        let scope = target_of(&file)
            .map(|(user_id, learning_type)| Scope::new(&table, user_id, learning_type));

        let response = invoke_checked(&app, &client, &[&table], &event, scope.as_ref()).await;
        assert_eq!(status_of(&response), expected, "{file}: {response}");
    }

    let after = snapshot(&client, &table).await;
    let erased = ["user-a", "user-b", "idp|user-c", "user-e"];
    let user_d_kept = ["user_profile", "user_memory", "entity_memory_v2#acme"];
    assert_eq!(
        after,
        filtered(&before, |user_id, sort_key| {
            let kept_by_type = match user_id {
                "user-d" => user_d_kept.contains(&sort_key),
                "user-g" => sort_key == "user_profile",
                _ => true,
            };
            !erased.contains(&user_id) && kept_by_type
        })
    );
    assert_eq!(sort_keys_of(&after, "user-f"), ["user_profile"]);
    assert_eq!(sort_keys_of(&after, "user-g"), ["user_profile"]);
}
