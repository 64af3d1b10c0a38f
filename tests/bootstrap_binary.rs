//! The real `bootstrap` binary, run against a local Runtime API and dynalite,
//! configured only through its environment as Lambda would configure it.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::dynamo_proxy::DynamoProxy;
use support::invariants::{Scope, assert_invariants, snapshot_tables};
use support::jwks_server::JwksServer;
use support::runtime_api::{Outcome, RuntimeApi, TRACE_HEADER};
use support::tokens::jwks;
use support::*;

/// Starts the binary with the environment Lambda gives a function, plus `extra`.
fn start_bootstrap(runtime_api: &RuntimeApi, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "delete-learning-user")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_DYNAMODB", &dynalite().endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().expect("start the bootstrap binary")
}

/// Returns the HTTP response of a request's outcome, and panics on an invocation error.
fn response_of((request_id, outcome): &(String, Outcome)) -> &Value {
    match outcome {
        Outcome::Response(response) => response,
        Outcome::Error(error) => panic!("invocation error for {request_id}: {error}"),
    }
}

/// Waits up to 30 s for a binary that must stop at start-up, and returns its exit status.
fn wait_for_exit(bootstrap: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = bootstrap.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bootstrap kept running with an invalid configuration"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stand-in for Lambda's X-Ray daemon: a UDP socket on 127.0.0.1.
struct XRayDaemon(std::net::UdpSocket);

impl XRayDaemon {
    fn start() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self(socket)
    }

    /// Returns the value for AWS_XRAY_DAEMON_ADDRESS.
    fn address(&self) -> String {
        self.0.local_addr().unwrap().to_string()
    }

    /// Receives one subsegment document, waiting up to 10 s, and checks the
    /// daemon protocol's header line before it.
    fn receive(&self) -> Value {
        let mut buffer = vec![0; 65_536];
        let length = self.0.recv(&mut buffer).expect("a subsegment within 10 s");
        let datagram = std::str::from_utf8(&buffer[..length]).unwrap();
        let (header, document) = datagram.split_once('\n').unwrap();
        assert_eq!(header, r#"{"format": "json", "version": 1}"#);
        serde_json::from_str(document).unwrap()
    }
}

/// Stops the binary and returns everything it wrote to stdout and stderr.
fn stop_and_collect_output(mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    output
}

#[tokio::test]
async fn binary_serves_sample_events() {
    let client = dynamodb_client();
    let table = unique_table_name("binary");
    create_table(&client, &table).await;
    put_learnings(
        &client,
        &table,
        &[
            ("user-a", "user_profile"),
            ("user-a", "entity_memory#acme"),
            ("user-f", "user_profile"),
        ],
        100,
    )
    .await;
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(&runtime_api, &[("LEARNINGS_TABLE", &table)]);
    let requests = [
        (
            "request-self",
            read_json(&repository_root().join("events/http-api-self.json")),
            Some(Scope::new(&table, "user-a", None)),
        ),
        (
            "request-other",
            read_json(&repository_root().join("events/http-api-other-user.json")),
            None,
        ),
        ("request-garbage", json!({"not": "an http event"}), None),
    ];

    // The events go one at a time, so that each request gets its own snapshots.
    let mut outcomes = Vec::new();
    for (request_id, event, scope) in requests {
        let before = snapshot_tables(&client, &[&table]).await;
        runtime_api.push_event(request_id, event);
        outcomes = runtime_api.wait_for_outcomes(outcomes.len() + 1, Duration::from_secs(60));
        let after = snapshot_tables(&client, &[&table]).await;
        let response = response_of(outcomes.last().unwrap());
        assert_invariants(&before, &after, scope.as_ref(), response);
    }
    let output = stop_and_collect_output(bootstrap);

    let statuses: Vec<(String, u64)> = outcomes
        .iter()
        .map(|(request_id, outcome)| match outcome {
            Outcome::Response(response) => (request_id.clone(), status_of(response)),
            Outcome::Error(error) => panic!("invocation error for {request_id}: {error}"),
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("request-self".to_owned(), 204),
            ("request-other".to_owned(), 403),
            ("request-garbage".to_owned(), 400)
        ]
    );
    let after = snapshot(&client, &table).await;
    assert_eq!(
        after.keys().cloned().collect::<Vec<_>>(),
        [("user-f".to_owned(), "user_profile".to_owned())]
    );

    let request_lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("status").is_some())
        .collect();
    assert_eq!(request_lines.len(), 3, "{output}");
    assert_eq!(request_lines[0]["request_id"], "request-self");
    assert_eq!(request_lines[0]["caller_kind"], "self");
    assert_eq!(request_lines[0]["trace_id"], TRACE_HEADER);
    assert_eq!(request_lines[0]["Outcome"], "Deleted");
    assert_eq!(request_lines[0]["DeletedItems"], 2);
    assert_eq!(
        request_lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "AgentOS/Learnings"
    );
    assert_eq!(request_lines[1]["Outcome"], "Rejected");
    assert_eq!(request_lines[2]["Outcome"], "Rejected");
    assert_eq!(request_lines[0]["identity_source"], "jwt");
    assert_eq!(request_lines[0]["deleted"], 2);
    assert_eq!(request_lines[0]["status"], 204);
    assert_eq!(request_lines[1]["error_code"], "FORBIDDEN");
    assert!(!output.to_lowercase().contains("authorization"), "{output}");

    let configuration = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "configuration loaded")
        .unwrap_or_else(|| panic!("no configuration line: {output}"));
    assert_eq!(configuration["delete_concurrency"], 8);
    assert_eq!(configuration["deadline_margin_ms"], 1000);
    assert_eq!(configuration["dynamodb_attempt_timeout_ms"], 2000);
    assert_eq!(configuration["dynamodb_max_attempts"], 5);
}

#[test]
fn missing_table_variable_stops_start_up() {
    let runtime_api = RuntimeApi::start();
    let mut bootstrap = start_bootstrap(&runtime_api, &[]);

    let status = wait_for_exit(&mut bootstrap);
    let output = stop_and_collect_output(bootstrap);

    assert!(!status.success());
    assert!(output.contains("LEARNINGS_TABLE"), "{output}");
}

#[test]
fn misspelled_log_level_keeps_error_lines() {
    let runtime_api = RuntimeApi::start();
    let mut bootstrap = start_bootstrap(&runtime_api, &[("AWS_LAMBDA_LOG_LEVEL", "ERORR")]);

    let status = wait_for_exit(&mut bootstrap);
    let output = stop_and_collect_output(bootstrap);
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();

    assert!(!status.success());
    assert!(
        lines.iter().any(|line| line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|message| message.contains("AWS_LAMBDA_LOG_LEVEL 'ERORR'"))),
        "{output}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["level"] == "ERROR" && line["variable"] == "LEARNINGS_TABLE"),
        "{output}"
    );
}

#[tokio::test]
async fn trace_logs_never_contain_the_token() {
    let client = dynamodb_client();
    let table = unique_table_name("trace");
    create_table(&client, &table).await;
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
        ],
    );
    let marker = "token-marker-3f9a1c";
    let mut event = read_json(&repository_root().join("events/http-api-self.json"));
    event["headers"]["authorization"] = json!(format!("Bearer {marker}"));
    let before = snapshot_tables(&client, &[&table]).await;

    runtime_api.push_event("request-trace", event);
    let outcomes = runtime_api.wait_for_outcomes(1, Duration::from_secs(60));
    let after = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    assert!(matches!(&outcomes[0].1, Outcome::Response(response) if status_of(response) == 204));
    assert!(
        output.contains("TRACE"),
        "the test expects TRACE lines: {output}"
    );
    assert!(!output.contains(marker), "{output}");
    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response_of(&outcomes[0]));
}

#[tokio::test]
async fn hashed_audit_hides_user_ids() {
    let client = dynamodb_client();
    let table = unique_table_name("hashed");
    create_table(&client, &table).await;
    put_learnings(&client, &table, &[("user-a", "user_profile")], 100).await;
    let key = "audit-key-for-tests-only-0123456789";
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", key),
            ("METRICS_NAMESPACE", "Tests/Audit"),
            ("AWS_LAMBDA_FUNCTION_NAME", "delete-learning-user-test"),
        ],
    );
    let event = read_json(&repository_root().join("events/http-api-self.json"));
    let before = snapshot_tables(&client, &[&table]).await;

    runtime_api.push_event("request-hashed", event);
    let outcomes = runtime_api.wait_for_outcomes(1, Duration::from_secs(60));
    let after = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response_of(&outcomes[0]));
    assert!(!output.contains("user-a"), "{output}");
    assert!(!output.contains(key), "{output}");
    let audit = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["request_id"] == "request-hashed")
        .unwrap_or_else(|| panic!("no audit record: {output}"));
    let hashed = audit["target_user"].as_str().unwrap();
    assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");
    assert_eq!(audit["caller_id"], hashed);
    assert_eq!(audit["user_ids_hashed"], true);
    assert_eq!(audit["FunctionName"], "delete-learning-user-test");
    assert_eq!(
        audit["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Tests/Audit"
    );
}

#[tokio::test]
async fn deletion_sends_xray_subsegments() {
    let client = dynamodb_client();
    let table = unique_table_name("xray");
    create_table(&client, &table).await;
    let sort_keys: Vec<String> = (0..60)
        .map(|index| format!("user_memory#{index:02}"))
        .collect();
    let keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|key| ("user-a", key.as_str()))
        .collect();
    put_learnings(&client, &table, &keys, 100).await;
    let daemon = XRayDaemon::start();
    let daemon_address = daemon.address();
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("AWS_XRAY_DAEMON_ADDRESS", &daemon_address),
        ],
    );
    let event = read_json(&repository_root().join("events/http-api-self.json"));
    let before = snapshot_tables(&client, &[&table]).await;

    runtime_api.push_event("request-xray", event);
    let outcomes = runtime_api.wait_for_outcomes(1, Duration::from_secs(60));
    let after = snapshot_tables(&client, &[&table]).await;

    // The deletion's subsegment closes last, after its calls.
    let mut subsegments = Vec::new();
    while !subsegments
        .iter()
        .any(|document: &Value| document["name"] == "delete_learnings")
    {
        subsegments.push(daemon.receive());
    }
    stop_and_collect_output(bootstrap);

    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response_of(&outcomes[0]));
    let deletion = subsegments.last().unwrap();
    assert_eq!(deletion["trace_id"], "1-6751e2a0-0123456789abcdef01234567");
    assert_eq!(deletion["parent_id"], "53995c3f42cd8ad8");
    assert_eq!(deletion["type"], "subsegment");
    assert!(deletion.get("fault").is_none(), "{deletion}");
    let calls = &subsegments[..subsegments.len() - 1];
    let operations: Vec<&str> = calls
        .iter()
        .map(|call| call["aws"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations
            .iter()
            .filter(|operation| **operation == "Query")
            .count(),
        1
    );
    assert_eq!(
        operations
            .iter()
            .filter(|operation| **operation == "BatchWriteItem")
            .count(),
        3
    );
    for call in calls {
        assert_eq!(call["name"], "DynamoDB", "{call}");
        assert_eq!(call["parent_id"], deletion["id"], "{call}");
        assert_eq!(call["trace_id"], deletion["trace_id"], "{call}");
        assert_eq!(call["namespace"], "aws", "{call}");
        assert_eq!(call["aws"]["table_name"], table.as_str(), "{call}");
        assert!(
            call["start_time"].as_f64() <= call["end_time"].as_f64(),
            "{call}"
        );
        assert!(call.get("fault").is_none(), "{call}");
    }
}

#[test]
fn short_hash_key_stops_start_up() {
    let runtime_api = RuntimeApi::start();
    let mut bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", "too-short-secret"),
        ],
    );

    let status = wait_for_exit(&mut bootstrap);
    let output = stop_and_collect_output(bootstrap);

    assert!(!status.success());
    assert!(output.contains("AUDIT_HASH_KEY"), "{output}");
    assert!(output.contains("at least 32 bytes"), "{output}");
    assert!(!output.contains("too-short-secret"), "{output}");
}

#[tokio::test]
async fn near_deadline_gets_500_not_timeout() {
    let client = dynamodb_client();
    let table = unique_table_name("deadline");
    create_table(&client, &table).await;
    put_learnings(
        &client,
        &table,
        &[("user-a", "user_profile"), ("user-a", "entity_memory#acme")],
        100,
    )
    .await;
    let before = snapshot(&client, &table).await;
    let daemon = XRayDaemon::start();
    let daemon_address = daemon.address();
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("DELETE_DEADLINE_MARGIN_MS", "5000"),
            ("AWS_XRAY_DAEMON_ADDRESS", &daemon_address),
        ],
    );

    // Lambda's deadline header is 2 s away, inside the 5 s margin, so the
    // function must respond at once without deleting.
    let event = read_json(&repository_root().join("events/http-api-self.json"));
    let before_request = snapshot_tables(&client, &[&table]).await;
    let deadline_ms = support::runtime_api::epoch_millis() + 2_000;
    runtime_api.push_event_with_deadline("request-late", event, Some(deadline_ms));
    let outcomes = runtime_api.wait_for_outcomes(1, Duration::from_secs(60));
    let after_request = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    let Outcome::Response(response) = &outcomes[0].1 else {
        panic!("invocation error: {outcomes:?}");
    };
    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before_request, &after_request, Some(&scope), response);
    assert_eq!(status_of(response), 500);
    let detail = error_body(response)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("after deleting 0 learnings"), "{detail}");
    assert!(detail.contains("request-late"), "{detail}");
    assert_eq!(snapshot(&client, &table).await, before);
    assert!(output.contains("invocation deadline"), "{output}");

    // The deletion made no call, and X-Ray shows it as a fault.
    let deletion = daemon.receive();
    assert_eq!(deletion["name"], "delete_learnings", "{deletion}");
    assert_eq!(deletion["fault"], true, "{deletion}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_makes_no_network_calls() {
    let client = dynamodb_client();
    let table = unique_table_name("init");
    create_table(&client, &table).await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    let jwks_server = JwksServer::start(&jwks(&[("rsa", Algorithm::RS256, "rsa-1")]));
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("AWS_ENDPOINT_URL_DYNAMODB", &proxy.endpoint),
            ("JWT_JWKS_URL", &jwks_server.url),
        ],
    );

    // The first poll for an event comes after the whole init.
    let runtime_api = tokio::task::spawn_blocking(move || {
        runtime_api.wait_for_first_poll(Duration::from_secs(60));
        runtime_api
    })
    .await
    .unwrap();

    assert_eq!(runtime_api.init_error(), None);
    assert_eq!(proxy.requests(), 0, "DynamoDB requests at init");
    assert_eq!(jwks_server.fetches(), 0, "JWKS fetches at init");

    // The first event does reach DynamoDB through the proxy, which shows
    // that the zero above was counted on the function's real path. The
    // snapshots scan dynalite directly, so the proxy does not count them.
    let before = snapshot_tables(&client, &[&table]).await;
    runtime_api.push_event(
        "request-first",
        read_json(&repository_root().join("events/http-api-self.json")),
    );
    let outcomes = tokio::task::spawn_blocking(move || {
        runtime_api.wait_for_outcomes(1, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let after = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    assert!(
        matches!(&outcomes[0].1, Outcome::Response(response) if status_of(response) == 204),
        "{outcomes:?} {output}"
    );
    assert_eq!(proxy.count("Query"), 1);
    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response_of(&outcomes[0]));
}

#[tokio::test]
async fn past_emulator_deadline_sets_no_limit() {
    let client = dynamodb_client();
    let table = unique_table_name("emulator");
    create_table(&client, &table).await;
    put_learnings(&client, &table, &[("user-a", "user_profile")], 100).await;
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(&runtime_api, &[("LEARNINGS_TABLE", &table)]);

    // cargo lambda 1.9.2 sends this fixed deadline, 600,000 ms after the epoch.
    let event = read_json(&repository_root().join("events/http-api-self.json"));
    let before = snapshot_tables(&client, &[&table]).await;
    runtime_api.push_event_with_deadline("request-emulated", event, Some(600_000));
    let outcomes = runtime_api.wait_for_outcomes(1, Duration::from_secs(60));
    let after = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    let Outcome::Response(response) = &outcomes[0].1 else {
        panic!("invocation error: {outcomes:?}");
    };
    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response);
    assert_eq!(status_of(response), 204, "{output}");
    assert!(snapshot(&client, &table).await.is_empty());
    assert!(output.contains("the deletion runs without one"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_timeout_variable_is_applied() {
    let client = dynamodb_client();
    let table = unique_table_name("attempt");
    create_table(&client, &table).await;
    put_learnings(&client, &table, &[("user-a", "user_profile")], 100).await;
    let proxy = DynamoProxy::start(&dynalite().endpoint).await;
    proxy.hold_next("BatchWriteItem", 1);
    let runtime_api = RuntimeApi::start();
    let bootstrap = start_bootstrap(
        &runtime_api,
        &[
            ("LEARNINGS_TABLE", &table),
            ("AWS_ENDPOINT_URL_DYNAMODB", &proxy.endpoint),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "300"),
            ("DELETE_DEADLINE_MARGIN_MS", "250"),
        ],
    );

    // The first BatchWriteItem never gets a response. With the 300 ms attempt
    // timeout its retry deletes the item well inside the 2 s invocation. With
    // the default 2 s timeout the attempt would outlast the invocation, and
    // the function would return its deadline 500 instead.
    let before = snapshot_tables(&client, &[&table]).await;
    let deadline_ms = support::runtime_api::epoch_millis() + 2_000;
    runtime_api.push_event_with_deadline(
        "request-stalled",
        read_json(&repository_root().join("events/http-api-self.json")),
        Some(deadline_ms),
    );
    let outcomes = tokio::task::spawn_blocking(move || {
        runtime_api.wait_for_outcomes(1, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let after = snapshot_tables(&client, &[&table]).await;
    let output = stop_and_collect_output(bootstrap);

    assert!(
        matches!(&outcomes[0].1, Outcome::Response(response) if status_of(response) == 204),
        "{outcomes:?} {output}"
    );
    assert_eq!(proxy.count("BatchWriteItem"), 2);
    assert!(snapshot(&client, &table).await.is_empty());
    let scope = Scope::new(&table, "user-a", None);
    assert_invariants(&before, &after, Some(&scope), response_of(&outcomes[0]));
}
