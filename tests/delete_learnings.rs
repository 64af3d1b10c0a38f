//! The handler against dynalite: which items each request deletes, and which
//! it leaves byte-identical.

mod support;

use delete_learning_user::config::AuthConfig;
use delete_learning_user::store::{self, DeletionScope};
use delete_learning_user::tables::TableCatalog;
use serde_json::json;
use support::invariants::{Scope, invoke_checked};
use support::*;

/// Creates a table with `keys` and returns the client, the table name and its snapshot.
async fn seeded_table(keys: &[(&str, &str)]) -> (aws_sdk_dynamodb::Client, String, Snapshot) {
    let client = dynamodb_client();
    let table = unique_table_name("learnings");
    create_table(&client, &table).await;
    put_learnings(&client, &table, keys, 100).await;
    let before = snapshot(&client, &table).await;
    (client, table, before)
}

const TRAPS: &[(&str, &str)] = &[
    ("user-a", "user"),
    ("user-a", "user#1"),
    ("user-a", "user_profile"),
    ("user-a", "user_memory"),
    ("user-a", "entity_memory"),
    ("user-a", "entity_memory#acme"),
    ("user-a", "entity_memory#globex"),
    ("user-a", "entity_memory_v2#acme"),
    ("user-a", "entity_memory!x"),
    ("user-a", "entity_memory$"),
    ("user-a", "entity_memory%x"),
    ("user-a", "entity_memoryz"),
    ("user-a", "entity_memor"),
    ("user-b", "entity_memory"),
    ("user-b", "entity_memory#acme"),
    ("user-a2", "user_profile"),
    ("user", "user_profile"),
];

#[tokio::test]
async fn own_learnings_are_all_deleted() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(json!({"sub": "user-a"}), "user-a", ""),
        Some(&Scope::new(&table, "user-a", None)),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    assert_eq!(response["body"], "");
    assert!(response["headers"].get("content-type").is_none());
    let after = snapshot(&client, &table).await;
    assert!(sort_keys_of(&after, "user-a").is_empty());
    assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn learning_type_spares_prefix_traps() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(
            json!({"sub": "user-a"}),
            "user-a",
            "learning_type=entity_memory",
        ),
        Some(&Scope::new(&table, "user-a", Some("entity_memory"))),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    let after = snapshot(&client, &table).await;
    assert_eq!(
        sort_keys_of(&after, "user-a"),
        [
            "entity_memor",
            "entity_memory!x",
            "entity_memory$",
            "entity_memory%x",
            "entity_memory_v2#acme",
            "entity_memoryz",
            "user",
            "user#1",
            "user_memory",
            "user_profile",
        ]
    );
    let deleted = [
        "entity_memory",
        "entity_memory#acme",
        "entity_memory#globex",
    ];
    assert_eq!(
        after,
        filtered(&before, |user_id, sort_key| user_id != "user-a"
            || !deleted.contains(&sort_key))
    );
}

#[tokio::test]
async fn short_type_spares_longer_names() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(json!({"sub": "user-a"}), "user-a", "learning_type=user"),
        Some(&Scope::new(&table, "user-a", Some("user"))),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    let after = snapshot(&client, &table).await;
    assert!(after.contains_key(&("user-a".to_owned(), "user_profile".to_owned())));
    assert!(after.contains_key(&("user-a".to_owned(), "user_memory".to_owned())));
    assert_eq!(
        after,
        filtered(&before, |user_id, sort_key| user_id != "user-a"
            || !["user", "user#1"].contains(&sort_key))
    );
}

#[tokio::test]
async fn three_hundred_large_items_span_pages() {
    let client = dynamodb_client();
    let table = unique_table_name("large");
    create_table(&client, &table).await;
    let sort_keys: Vec<String> = (0..300)
        .map(|index| format!("entity_memory#{index:04}"))
        .collect();
    let keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|sort_key| ("user-a", sort_key.as_str()))
        .collect();
    // 300 items of about 4 KB make about 1.2 MB, over one Query page's 1 MB.
    put_learnings(&client, &table, &keys, 4_000).await;
    put_learnings(&client, &table, &[("user-b", "entity_memory#0001")], 4_000).await;
    let before = snapshot(&client, &table).await;

    let report = store::delete_learnings(
        &client,
        DeletionScope {
            table: &table,
            user_id: "user-a",
            learning_type: None,
        },
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.deleted, 300);
    assert!(
        report.pages >= 2,
        "expected a second Query page, got {}",
        report.pages
    );
    assert_eq!(report.batches, 12);
    assert_eq!(report.unprocessed_retries, 0);
    let after = snapshot(&client, &table).await;
    assert_eq!(after, filtered(&before, |user_id, _| user_id != "user-a"));
}

#[tokio::test]
async fn twenty_six_items_make_two_batches() {
    let client = dynamodb_client();
    let table = unique_table_name("batches");
    create_table(&client, &table).await;
    let sort_keys: Vec<String> = (0..26)
        .map(|index| format!("decision_log#{index:02}"))
        .collect();
    let keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|sort_key| ("user-a", sort_key.as_str()))
        .collect();
    put_learnings(&client, &table, &keys, 100).await;

    let report = store::delete_learnings(
        &client,
        DeletionScope {
            table: &table,
            user_id: "user-a",
            learning_type: Some("decision_log"),
        },
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.deleted, 26);
    assert_eq!(report.pages, 1);
    assert_eq!(report.batches, 2);
    assert!(snapshot(&client, &table).await.is_empty());
}

#[tokio::test]
async fn nothing_matched_is_still_204() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(json!({"sub": "nobody"}), "nobody", ""),
        Some(&Scope::new(&table, "nobody", None)),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn rest_encoded_paths_are_decoded_once() {
    let (client, table, before) = seeded_table(&[
        ("idp|user-c", "user_profile"),
        ("idp%7Cuser-c", "user_profile"),
        ("a%25b", "user_profile"),
        ("a%b", "user_profile"),
        ("a%2525b", "user_profile"),
    ])
    .await;
    let app = app_for_table(client.clone(), &table);

    let pipe = invoke_checked(
        &app,
        &client,
        &[&table],
        &rest_api_event("idp%7Cuser-c", json!({"sub": "idp|user-c"})),
        Some(&Scope::new(&table, "idp|user-c", None)),
    )
    .await;
    let percent = invoke_checked(
        &app,
        &client,
        &[&table],
        &rest_api_event("a%2525b", json!({"sub": "a%25b"})),
        Some(&Scope::new(&table, "a%25b", None)),
    )
    .await;

    assert_eq!(status_of(&pipe), 204);
    assert_eq!(status_of(&percent), 204);
    let after = snapshot(&client, &table).await;
    assert_eq!(
        after,
        filtered(&before, |user_id, _| user_id != "idp|user-c"
            && user_id != "a%25b")
    );
}

#[tokio::test]
async fn encoded_id_of_another_user_is_403() {
    let (client, table, before) = seeded_table(&[("idp|user-c", "user_profile")]).await;
    let app = app_for_table(client.clone(), &table);

    // The caller is literally "idp%7Cuser-c"; the path names "idp|user-c".
    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &rest_api_event("idp%7Cuser-c", json!({"sub": "idp%7Cuser-c"})),
        None,
    )
    .await;

    assert_eq!(status_of(&response), 403);
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn group_formats_decide_admin() {
    let cases = [
        (json!("admin"), 204),
        (json!("admin,users"), 204),
        (json!("[admin users]"), 204),
        (json!(r#"["users","admin"]"#), 204),
        (json!("[superadmin users]"), 403),
        (json!("administrators"), 403),
        (json!(""), 403),
    ];

    for (groups, expected) in cases {
        let (client, table, before) =
            seeded_table(&[("user-e", "user_profile"), ("user-e", "decision_log#1")]).await;
        let app = app_for_table(client.clone(), &table);
        // Only an admin may delete user-e's learnings, so the others must delete nothing.
        let scope = (expected == 204).then(|| Scope::new(&table, "user-e", None));

        let response = invoke_checked(
            &app,
            &client,
            &[&table],
            &rest_api_event(
                "user-e",
                json!({"sub": "ops-admin-2", "cognito:groups": groups}),
            ),
            scope.as_ref(),
        )
        .await;

        assert_eq!(status_of(&response), expected, "groups {groups}");
        let after = snapshot(&client, &table).await;
        if expected == 204 {
            assert!(after.is_empty(), "groups {groups}");
        } else {
            assert_eq!(after, before, "groups {groups}");
        }
    }
}

#[tokio::test]
async fn other_user_gets_403() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(json!({"sub": "user-a"}), "user-b", ""),
        None,
    )
    .await;

    assert_eq!(status_of(&response), 403);
    assert_eq!(response["headers"]["content-type"], "application/json");
    assert_eq!(
        error_body(&response),
        json!({"detail": "Cannot delete learnings for another user", "error_code": "FORBIDDEN"})
    );
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn token_without_user_id_gets_403() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let no_isolation = AuthConfig {
        user_isolation: false,
        ..AuthConfig::default()
    };
    let app = app_with(
        client.clone(),
        TableCatalog::from_env_values(Some(&table), None).unwrap(),
        no_isolation,
    );

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &delete_by(json!({"username": "alice"}), "user-a", ""),
        None,
    )
    .await;

    assert_eq!(status_of(&response), 403);
    assert!(
        error_body(&response)["detail"]
            .as_str()
            .unwrap()
            .contains("no user id")
    );
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn missing_identity_gets_401() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &http_api_event("/learnings/users/user-a", "", Some("user-a"), None),
        None,
    )
    .await;

    assert_eq!(status_of(&response), 401);
    assert_eq!(error_body(&response)["error_code"], "UNAUTHENTICATED");
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn anonymous_switch_allows_any_user() {
    let (client, table, _) = seeded_table(TRAPS).await;
    let anonymous = AuthConfig {
        allow_anonymous: true,
        ..AuthConfig::default()
    };
    let app = app_with(
        client.clone(),
        TableCatalog::from_env_values(Some(&table), None).unwrap(),
        anonymous,
    );

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &http_api_event("/learnings/users/user-b", "", None, None),
        Some(&Scope::new(&table, "user-b", None)),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    assert!(sort_keys_of(&snapshot(&client, &table).await, "user-b").is_empty());
}

#[tokio::test]
async fn iam_caller_is_unscoped() {
    let (client, table, _) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);
    let mut event = http_api_event("/learnings/users/user-b", "", Some("user-b"), None);
    event["requestContext"]["authorizer"] = json!({"iam": {
        "accessKey": "ASIAEXAMPLE", "accountId": "123456789012",
        "callerId": "AROAEXAMPLE:eraser", "userArn": "arn:aws:sts::123456789012:assumed-role/eraser/job",
        "userId": "AROAEXAMPLE:eraser"
    }});

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &event,
        Some(&Scope::new(&table, "user-b", None)),
    )
    .await;

    assert_eq!(status_of(&response), 204);
    assert!(sort_keys_of(&snapshot(&client, &table).await, "user-b").is_empty());
}

#[tokio::test]
async fn invalid_requests_delete_nothing() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);
    let owner = json!({"sub": "user-a"});
    let cases = [
        ("empty learning_type", "learning_type=", 422),
        (
            "repeated learning_type",
            "learning_type=user&learning_type=user",
            422,
        ),
        (
            "learning_type with #",
            "learning_type=entity_memory%23acme",
            422,
        ),
        ("learning_type with control", "learning_type=user%0A", 422),
        ("repeated db_id", "db_id=a&db_id=a", 422),
        ("empty table", "table=", 422),
        ("table without db_id", &format!("table={table}"), 400),
        ("unknown db_id", "db_id=eu", 404),
    ];

    for (name, query, expected) in cases {
        let event = delete_by(owner.clone(), "user-a", query);
        let response = invoke_checked(&app, &client, &[&table], &event, None).await;
        assert_eq!(status_of(&response), expected, "{name}");
        let body = error_body(&response);
        assert!(body["detail"].is_string(), "{name}");
        assert!(body["error_code"].is_string(), "{name}");
    }

    let control = invoke_checked(
        &app,
        &client,
        &[&table],
        &http_api_event("/learnings/users/user-a%00", "", None, Some(owner.clone())),
        None,
    )
    .await;
    assert_eq!(status_of(&control), 422);
    let long_id = "u".repeat(2_049);
    let too_long = invoke_checked(
        &app,
        &client,
        &[&table],
        &http_api_event(
            &format!("/learnings/users/{long_id}"),
            "",
            None,
            Some(json!({"sub": long_id})),
        ),
        None,
    )
    .await;
    assert_eq!(status_of(&too_long), 422);

    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn other_method_gets_405() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);
    let mut event = delete_by(json!({"sub": "user-a"}), "user-a", "");
    event["requestContext"]["http"]["method"] = json!("GET");

    let response = invoke_checked(&app, &client, &[&table], &event, None).await;

    assert_eq!(status_of(&response), 405);
    assert_eq!(response["headers"]["allow"], "DELETE");
    assert_eq!(error_body(&response)["error_code"], "METHOD_NOT_ALLOWED");
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn other_path_gets_404() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    let response = invoke_checked(
        &app,
        &client,
        &[&table],
        &http_api_event(
            "/learnings/users/user-a/extra",
            "",
            None,
            Some(json!({"sub": "user-a"})),
        ),
        None,
    )
    .await;

    assert_eq!(status_of(&response), 404);
    assert_eq!(error_body(&response)["error_code"], "NOT_FOUND");
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn non_http_event_gets_400() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);

    for event in [
        json!({"Records": []}),
        json!(null),
        json!("DELETE /learnings/users/user-a"),
    ] {
        let response = invoke_checked(&app, &client, &[&table], &event, None).await;
        assert_eq!(status_of(&response), 400, "{event}");
        assert_eq!(error_body(&response)["error_code"], "BAD_REQUEST");
    }
    assert_eq!(snapshot(&client, &table).await, before);
}

#[tokio::test]
async fn db_id_and_table_pick_configured_table() {
    let client = dynamodb_client();
    let default_table = unique_table_name("default");
    let eu = unique_table_name("eu");
    let eu_archive = unique_table_name("eu_archive");
    for table in [&default_table, &eu, &eu_archive] {
        create_table(&client, table).await;
        put_learnings(
            &client,
            table,
            &[("user-a", "user_profile"), ("user-b", "user_profile")],
            100,
        )
        .await;
    }
    let databases = json!({"eu": [eu, eu_archive]}).to_string();
    let tables = TableCatalog::from_env_values(Some(&default_table), Some(&databases)).unwrap();
    let app = app_with(client.clone(), tables, AuthConfig::default());
    let owner = json!({"sub": "user-a"});
    let default_before = snapshot(&client, &default_table).await;
    let eu_before = snapshot(&client, &eu).await;

    let all_tables = [default_table.as_str(), eu.as_str(), eu_archive.as_str()];

    let unlisted = invoke_checked(
        &app,
        &client,
        &all_tables,
        &delete_by(
            owner.clone(),
            "user-a",
            &format!("db_id=eu&table={default_table}"),
        ),
        None,
    )
    .await;
    let archive = invoke_checked(
        &app,
        &client,
        &all_tables,
        &delete_by(
            owner.clone(),
            "user-a",
            &format!("db_id=eu&table={eu_archive}"),
        ),
        Some(&Scope::new(&eu_archive, "user-a", None)),
    )
    .await;

    assert_eq!(status_of(&unlisted), 404);
    assert_eq!(status_of(&archive), 204);
    assert_eq!(snapshot(&client, &default_table).await, default_before);
    assert_eq!(snapshot(&client, &eu).await, eu_before);
    assert_eq!(
        snapshot(&client, &eu_archive)
            .await
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [("user-b".to_owned(), "user_profile".to_owned())]
    );
}

#[tokio::test]
async fn other_route_with_user_id_gets_404() {
    let (client, table, before) = seeded_table(TRAPS).await;
    let app = app_for_table(client.clone(), &table);
    let admin = json!({"sub": "ops", "cognito:groups": "admin"});
    let mut rest = rest_api_event("user-b", admin.clone());
    rest["resource"] = json!("/admin/users/{user_id}");
    rest["path"] = json!("/admin/users/user-b");
    let mut http_api = http_api_event("/admin/users/user-b", "", Some("user-b"), Some(admin));
    http_api["routeKey"] = json!("DELETE /admin/users/{user_id}");

    for event in [rest, http_api] {
        let response = invoke_checked(&app, &client, &[&table], &event, None).await;
        assert_eq!(status_of(&response), 404, "{event}");
    }
    assert_eq!(snapshot(&client, &table).await, before);
}
