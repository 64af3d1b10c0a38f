//! Property tests: random tables, random requests and random DynamoDB fault
//! schedules, with the invariants of `support::invariants` checked after
//! every request, and a repeat without faults that must finish the job.
//!
//! The run has 256 cases unless PROPTEST_CASES sets another count, and
//! PROPTEST_RNG_SEED replays a run. `make soak` runs many more cases and
//! prints the counts of cases, statuses and faults.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use delete_learning_user::config::{AuthConfig, DeletionConfig, DynamoDbConfig};
use delete_learning_user::handler::App;
use delete_learning_user::tables::TableCatalog;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::{Value, json};
use support::dynamo_proxy::{DynamoProxy, Fault};
use support::invariants::{Scope, check_request, snapshot_tables};
use support::*;

/// Pieces of user ids and record ids: characters that URLs, query strings and
/// key conditions treat specially, and letters that have a composed and a
/// decomposed form, so that ids can look alike without being equal.
const ID_PIECES: &[&str] = &[
    "a", "b", "Z", "0", "7", "-", "_", ".", "~", " ", "#", "/", "%", "%2F", "+", "&", "=", "?",
    ":", "@", "'", "\"", "\\", "é", "e\u{301}", "ß", "İ", "漢", "😀", "\u{200b}", "..",
];

/// Learning types, with names that begin with another type's name.
const LEARNING_TYPES: &[&str] = &[
    "user_profile",
    "user_memory",
    "user_memory_v2",
    "user_memoryx",
    "entity_memory",
    "session_context",
    "learned_knowledge",
];

/// A learning type that no table holds.
const ABSENT_TYPE: &str = "never_stored";

/// What percent-encoding leaves as it is in a path segment: RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Who sends the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerRole {
    /// The target user, with no admin scope.
    TargetUser,
    /// An admin, by the admin scope.
    Admin,
    /// Another user, with no admin scope, whom the policy rejects.
    OtherUser,
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    /// Distinct user ids. The second and third look like the first.
    users: Vec<String>,
    /// Learnings as (index into `users`, sort key, payload bytes), stored in both tables.
    learnings: Vec<(usize, String, usize)>,
    /// The target's index into `users`, or `users.len()` for a user with no learnings.
    target: usize,
    learning_type: Option<String>,
    caller: CallerRole,
    /// Whether the request names the second table with `db_id` and `table`.
    second_table: bool,
    concurrency: usize,
    fault_seed: u64,
    fault_fraction: f64,
    faults: Vec<Fault>,
}

fn id_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ID_PIECES), 1..8).prop_map(|pieces| pieces.concat())
}

/// Sort keys: a type alone, or a type, a separator and a record id. Most
/// separators are `#`, and the others make keys that sort near a type's
/// records without being of that type.
fn sort_key_strategy() -> impl Strategy<Value = String> {
    let separator =
        prop_oneof![4 => Just("#"), 1 => prop::sample::select(&["!", "$", " ", ""][..])];
    (
        prop::sample::select(LEARNING_TYPES),
        prop::option::weighted(0.8, (separator, id_strategy())),
    )
        .prop_map(|(learning_type, record)| match record {
            Some((separator, record_id)) => format!("{learning_type}{separator}{record_id}"),
            None => learning_type.to_owned(),
        })
}

/// Mostly small payloads, and one in five up to 20 KB.
fn payload_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..400_usize, 1 => 0..=20_000_usize]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let users =
        (id_strategy(), prop::collection::vec(id_strategy(), 0..3)).prop_map(|(first, others)| {
            let mut users = vec![
                first.clone(),
                format!("{first}#"),
                format!("{first}\u{301}"),
            ];
            for other in others {
                if !users.contains(&other) {
                    users.push(other);
                }
            }
            users
        });

    users.prop_flat_map(|users| {
        let user_count = users.len();
        // Half of the learnings belong to the first user, whom most
        // requests target, so that requests have work to do beside traps.
        let owner = prop_oneof![Just(0), 0..user_count];
        let learnings =
            prop::collection::vec((owner, sort_key_strategy(), payload_strategy()), 0..=120);
        let target = prop_oneof![3 => Just(0), 1 => 0..=user_count];
        let learning_type = prop::option::of(prop::sample::select(
            [LEARNING_TYPES, &[ABSENT_TYPE]].concat(),
        ));
        let caller = prop_oneof![
            2 => Just(CallerRole::TargetUser),
            2 => Just(CallerRole::Admin),
            1 => Just(CallerRole::OtherUser),
        ];
        let faults = prop::sample::subsequence(Fault::ALL.to_vec(), 1..=Fault::ALL.len());
        let fault_fraction = prop::sample::select(vec![0.0, 0.1, 0.3, 0.6, 0.9]);
        (
            Just(users),
            learnings,
            target,
            learning_type.prop_map(|learning_type| learning_type.map(str::to_owned)),
            caller,
            any::<bool>(),
            1..=8_usize,
            (any::<u64>(), fault_fraction, faults),
        )
            .prop_map(
                |(
                    users,
                    learnings,
                    target,
                    learning_type,
                    caller,
                    second_table,
                    concurrency,
                    (fault_seed, fault_fraction, faults),
                )| Case {
                    users,
                    learnings,
                    target,
                    learning_type,
                    caller,
                    second_table,
                    concurrency,
                    fault_seed,
                    fault_fraction,
                    faults,
                },
            )
    })
}

impl Case {
    fn target_user(&self) -> String {
        self.users
            .get(self.target)
            .cloned()
            .unwrap_or_else(|| format!("{}-without-learnings", self.users[0]))
    }

    fn claims(&self) -> Value {
        match self.caller {
            CallerRole::TargetUser => json!({"sub": self.target_user()}),
            CallerRole::Admin => json!({"sub": "admin-1", "scope": "agent_os:admin"}),
            CallerRole::OtherUser => json!({"sub": format!("{}-other", self.target_user())}),
        }
    }

    /// Builds the HTTP API event, with the user id percent-encoded in
    /// `rawPath` and decoded in `pathParameters`, as API Gateway sends it.
    fn event(&self, second_table: &str) -> Value {
        let user_id = self.target_user();
        let encoded = utf8_percent_encode(&user_id, PATH_SEGMENT).to_string();
        let mut query = Vec::new();
        if let Some(learning_type) = &self.learning_type {
            query.push(format!("learning_type={learning_type}"));
        }
        if self.second_table {
            query.push(format!("db_id=main&table={second_table}"));
        }

        let mut event = http_api_event(
            &format!("/learnings/users/{encoded}"),
            &query.join("&"),
            Some(&user_id),
            Some(self.claims()),
        );
        // http_api_event needs an id without percent-encoding, so the
        // decoded one replaces its path parameter.
        event["pathParameters"] = json!({"user_id": user_id});
        event
    }

    /// Returns the learnings to store, one per key, the last drawn one winning.
    fn distinct_learnings(&self) -> Vec<(&str, &str, usize)> {
        let mut by_key = BTreeMap::new();
        for (user, sort_key, payload_bytes) in &self.learnings {
            by_key.insert(
                (self.users[*user].as_str(), sort_key.as_str()),
                *payload_bytes,
            );
        }
        by_key
            .into_iter()
            .map(|((user_id, sort_key), payload_bytes)| (user_id, sort_key, payload_bytes))
            .collect()
    }
}

/// Counts over the whole run, for the summary line.
#[derive(Debug, Default)]
struct RunCounts {
    cases: u32,
    first_statuses: BTreeMap<u64, u32>,
    deleted_items: usize,
}

/// One Tokio runtime and one fault proxy for the whole run.
struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: DynamoProxy,
    counts: Mutex<RunCounts>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let proxy = runtime.block_on(DynamoProxy::start(&dynalite().endpoint));
        // Beyond the attempt timeout of `function_settings`.
        proxy.set_slow_response(Duration::from_millis(500));
        Harness {
            runtime,
            proxy,
            counts: Mutex::new(RunCounts::default()),
        }
    })
}

/// Returns the function's DynamoDB settings with short attempts and few of
/// them, so that harsh schedules end in a 500 quickly.
fn function_settings() -> DynamoDbConfig {
    DynamoDbConfig {
        attempt_timeout: Duration::from_millis(300),
        max_attempts: 3,
        ..DynamoDbConfig::default()
    }
}

async fn run_case(harness: &Harness, case: &Case) -> Result<(), TestCaseError> {
    let client = dynamodb_client();
    let first_table = unique_table_name("property");
    let second_table = unique_table_name("property");
    create_table(&client, &first_table).await;
    create_table(&client, &second_table).await;
    let learnings = case.distinct_learnings();
    put_sized_learnings(&client, &first_table, &learnings).await;
    put_sized_learnings(&client, &second_table, &learnings).await;
    let tables = [first_table.as_str(), second_table.as_str()];

    let catalog = TableCatalog::from_env_values(
        Some(&first_table),
        Some(&json!({"main": [first_table, second_table]}).to_string()),
    )
    .unwrap();
    let mut app = app_with(
        dynamodb_client_with(&harness.proxy.endpoint, &function_settings()),
        catalog,
        AuthConfig::default(),
    );
    app.config.deletion = DeletionConfig {
        concurrency: case.concurrency,
        ..fast_deletion()
    };

    let target_table = if case.second_table {
        &second_table
    } else {
        &first_table
    };
    let allowed = case.caller != CallerRole::OtherUser;
    let scope = allowed.then(|| {
        Scope::new(
            target_table,
            &case.target_user(),
            case.learning_type.as_deref(),
        )
    });
    let event = case.event(&second_table);

    harness
        .proxy
        .inject_faults(case.fault_seed, case.fault_fraction, &case.faults);
    let first = checked_request(&app, &client, &tables, &event, scope.as_ref()).await;
    harness.proxy.stop_faults();
    let expected: &[u64] = if allowed { &[204, 500] } else { &[403] };
    prop_assert!(
        first
            .as_ref()
            .is_ok_and(|(status, _)| expected.contains(status)),
        "with faults: {first:?}"
    );

    let repeat = checked_request(&app, &client, &tables, &event, scope.as_ref()).await;
    let expected = if allowed { 204 } else { 403 };
    prop_assert!(
        repeat.as_ref().is_ok_and(|(status, _)| *status == expected),
        "repeat without faults: {repeat:?}"
    );

    if let (Ok((status, deleted)), Ok((_, deleted_by_repeat))) = (&first, &repeat) {
        let mut counts = harness.counts.lock().unwrap();
        counts.cases += 1;
        *counts.first_statuses.entry(*status).or_default() += 1;
        counts.deleted_items += deleted + deleted_by_repeat;
    }
    delete_table(&client, &first_table).await;
    delete_table(&client, &second_table).await;
    Ok(())
}

/// Sends one request and checks the invariants. Returns the status and the
/// number of items that disappeared, or the broken invariant.
async fn checked_request(
    app: &App,
    client: &aws_sdk_dynamodb::Client,
    tables: &[&str],
    event: &Value,
    scope: Option<&Scope>,
) -> Result<(u64, usize), String> {
    let before = snapshot_tables(client, tables).await;

    let response = invoke(app, event).await;

    let after = snapshot_tables(client, tables).await;
    check_request(&before, &after, scope, &response)?;
    let count = |tables: &support::invariants::Tables| {
        tables.values().map(|items| items.len()).sum::<usize>()
    };
    Ok((status_of(&response), count(&before) - count(&after)))
}

#[test]
fn random_requests_keep_invariants_under_faults() {
    let harness = harness();
    // The seed is printed, so that a failing run can be replayed with it.
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let config = Config {
        // A direct runner has no source file to store failing cases next to,
        // and the failure message prints the case.
        failure_persistence: None,
        max_shrink_iters: 256,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);

    let result = runner.run(&case_strategy(), |case| {
        harness.runtime.block_on(run_case(harness, &case))
    });

    let counts = harness.counts.lock().unwrap();
    let injected = harness.proxy.injected_by_fault();
    let total_faults: u32 = injected.values().sum();
    eprintln!(
        "property run (PROPTEST_RNG_SEED={seed}): {} cases, first statuses {:?}, {} items deleted, {total_faults} faults injected {:?}, {} writes sent back unprocessed, {} DynamoDB requests",
        counts.cases,
        counts.first_statuses,
        counts.deleted_items,
        injected,
        harness.proxy.unprocessed_writes(),
        harness.proxy.requests()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => panic!("{reason}\nminimal case: {case:#?}"),
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }

    // Every case passed, so each counted once. The outcomes and faults that
    // the invariants are meant for must all have happened, or the run
    // proved less than it claims.
    assert_eq!(counts.cases, cases);
    for status in [204, 403, 500] {
        assert!(
            counts.first_statuses.contains_key(&status),
            "no case ended in {status}: {:?}",
            counts.first_statuses
        );
    }
    let kinds: BTreeSet<Fault> = injected.keys().copied().collect();
    assert_eq!(kinds, BTreeSet::from(Fault::ALL), "faults never injected");
}
