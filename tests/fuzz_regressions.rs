//! Replays the fuzz target's inputs: every file under fuzz/regressions/ and
//! the seed corpus under fuzz/seeds/event_to_request/. Each input must keep
//! the properties that the fuzz target checks, and the real handler must
//! respond to it with the status of the fuzz target's copy of the chain.

mod support;

#[path = "../fuzz/src/lib.rs"]
mod fuzz_chain;

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fuzz_chain::SETTINGS;
use serde_json::Value;
use support::invariants::check_response;
use support::*;

/// Returns the input files of a directory, sorted, leaving out its README and dotfiles.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && name != "README.md"
        })
        .collect();
    files.sort();
    files
}

/// Returns every regression input and seed, with its bytes.
fn fuzz_inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let root = repository_root();
    let regressions = input_files(&root.join("fuzz/regressions"));
    let seeds = input_files(&root.join("fuzz/seeds/event_to_request"));
    // Without seeds, an empty regressions directory would leave nothing to check.
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/seeds/event_to_request: run scripts/fuzz.sh, which writes them"
    );

    regressions
        .into_iter()
        .chain(seeds)
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn fuzz_inputs_keep_properties() {
    let mut failures = Vec::new();
    let mut statuses = BTreeSet::new();

    for (path, bytes) in fuzz_inputs() {
        // The panic hook prints the message of a broken property. Catching the
        // panic lets one run list every failing file.
        match panic::catch_unwind(AssertUnwindSafe(|| fuzz_chain::check_input(&bytes))) {
            Ok(Some(status)) => {
                statuses.insert(status);
            }
            Ok(None) => {}
            Err(_) => failures.push(path.display().to_string()),
        }
    }

    assert!(
        failures.is_empty(),
        "properties broken by:\n{}",
        failures.join("\n")
    );
    // The seeds must reach the checks of an accepted request and of each
    // step's rejection, or the fuzzer would start far from them.
    for expected in [204, 400, 401, 403, 404, 405, 422] {
        assert!(
            statuses.contains(&expected),
            "no seed or regression input gets {expected}; statuses seen: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn handler_agrees_with_fuzz_chain() {
    let client = dynamodb_client();
    for table in SETTINGS.tables.all_tables() {
        create_table(&client, table).await;
    }
    let app = app_with(client, SETTINGS.tables.clone(), SETTINGS.auth.clone());
    let mut mismatches = Vec::new();
    let mut compared = 0;

    for (path, bytes) in fuzz_inputs() {
        let Some(chain_status) = fuzz_chain::check_input(&bytes) else {
            continue;
        };
        let event: Value = serde_json::from_slice(&bytes).unwrap();

        let response = invoke(&app, &event).await;
        if let Err(broken) = check_response(&response) {
            mismatches.push(format!("{}: {broken}", path.display()));
        }
        let handler_status = status_of(&response);

        compared += 1;
        if handler_status != u64::from(chain_status) {
            mismatches.push(format!(
                "{}: the fuzz chain gives {chain_status}, the handler {handler_status}",
                path.display()
            ));
        }
    }

    assert!(compared > 0, "no input was JSON");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
