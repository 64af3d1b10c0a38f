//! Concurrent deletes of one user while new learnings keep arriving for that
//! user and for others, against dynalite.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::join_all;
use serde_json::json;
use support::invariants::check_response;
use support::*;

/// Upper bound of the learnings that the writer adds, so that it stops by itself.
const MAX_WRITTEN: usize = 4_000;

#[tokio::test]
async fn twenty_concurrent_deletes_spare_others() {
    let client = dynamodb_client();
    let table = unique_table_name("concurrent");
    create_table(&client, &table).await;
    let seeded_keys: Vec<(String, String)> = (0..2_000)
        .map(|index| ("user-a".to_owned(), format!("user_memory#{index:05}")))
        .chain((0..300).map(|index| ("user-b".to_owned(), format!("user_memory#{index:05}"))))
        .chain([("user-a-2".to_owned(), "user_profile".to_owned())])
        .collect();
    let pairs: Vec<(&str, &str)> = seeded_keys
        .iter()
        .map(|(user_id, sort_key)| (user_id.as_str(), sort_key.as_str()))
        .collect();
    put_learnings(&client, &table, &pairs, 250).await;
    let before = snapshot(&client, &table).await;

    // The writer adds learnings for user-a and user-b, 25 at a time, until
    // the deletes are over or it reaches MAX_WRITTEN.
    let stop = AtomicBool::new(false);
    let writer = async {
        let mut written = Vec::new();
        while !stop.load(Ordering::Relaxed) && written.len() < MAX_WRITTEN {
            let batch: Vec<(String, String)> = (written.len()..written.len() + 25)
                .map(|index| {
                    let user_id = if index % 2 == 0 { "user-a" } else { "user-b" };
                    (user_id.to_owned(), format!("entity_memory#new{index:05}"))
                })
                .collect();
            let pairs: Vec<(&str, &str)> = batch
                .iter()
                .map(|(user_id, sort_key)| (user_id.as_str(), sort_key.as_str()))
                .collect();
            put_learnings(&client, &table, &pairs, 250).await;
            written.extend(batch);
        }
        written
    };

    let app = app_for_table(client.clone(), &table);
    let event = delete_by(
        json!({"sub": "admin-1", "scope": "agent_os:admin"}),
        "user-a",
        "",
    );
    let deletes = async {
        let responses = join_all((0..20).map(|_| invoke(&app, &event))).await;
        stop.store(true, Ordering::Relaxed);
        responses
    };
    let (written, responses) = tokio::join!(writer, deletes);

    // check_request cannot judge these requests, because the writer adds
    // user-b's learnings during the deletes, outside their scope. The table
    // checks below replace it, and only the responses are checked here.
    for response in &responses {
        if let Err(broken) = check_response(response) {
            panic!("invariant broken: {broken}");
        }
    }
    let statuses: Vec<u64> = responses.iter().map(status_of).collect();
    assert_eq!(statuses, vec![204; 20]);
    assert!(
        !written.is_empty(),
        "the writer must run during the deletes"
    );
    let after = snapshot(&client, &table).await;

    // Every learning of user-a that existed before the deletes started is gone.
    let seeded_left: Vec<String> = sort_keys_of(&after, "user-a")
        .into_iter()
        .filter(|sort_key| sort_key.starts_with("user_memory#"))
        .collect();
    assert_eq!(seeded_left, Vec::<String>::new());

    // Other users keep every seeded learning byte for byte, and every new one.
    assert_eq!(
        filtered(&after, |user_id, sort_key| user_id != "user-a"
            && !sort_key.starts_with("entity_memory#new")),
        filtered(&before, |user_id, _| user_id != "user-a")
    );
    let written_for_b: BTreeSet<String> = written
        .iter()
        .filter(|(user_id, _)| user_id == "user-b")
        .map(|(_, sort_key)| sort_key.clone())
        .collect();
    let new_for_b: BTreeSet<String> = sort_keys_of(&after, "user-b")
        .into_iter()
        .filter(|sort_key| sort_key.starts_with("entity_memory#new"))
        .collect();
    assert_eq!(new_for_b, written_for_b);
}
