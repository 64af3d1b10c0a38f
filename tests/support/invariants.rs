//! The invariants that every request must keep, checked on snapshots of
//! every table of a test taken before and after the request:
//!
//! 1. items outside the request's scope are byte-identical afterwards;
//! 2. a 204 leaves none of the items that matched before the request;
//! 3. any other status leaves the matching items as a byte-identical subset
//!    of those before, and a 4xx leaves every table as it was;
//! 4. the outcome is an HTTP response with a documented status. A 204 has an
//!    empty body and no content type, and an error response has the
//!    documented `{detail, error_code}` body with the status's error code.
//!
//! The third invariant's other half, that a repeat without faults ends in
//! 204, is up to the tests that inject the faults.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use delete_learning_user::handler::App;
use serde_json::Value;

use super::{Snapshot, invoke, snapshot};

/// Every item of several tables, by table name.
pub type Tables = BTreeMap<String, Snapshot>;

/// The statuses that the API contract and this service document.
pub const DOCUMENTED_STATUSES: [u64; 8] = [204, 400, 401, 403, 404, 405, 422, 500];

/// The items that one request must delete: a user's learnings in one
/// table, of one learning type or of all.
#[derive(Debug, Clone)]
pub struct Scope {
    pub table: String,
    pub user_id: String,
    pub learning_type: Option<String>,
}

impl Scope {
    pub fn new(table: &str, user_id: &str, learning_type: Option<&str>) -> Self {
        Self {
            table: table.to_owned(),
            user_id: user_id.to_owned(),
            learning_type: learning_type.map(str::to_owned),
        }
    }

    /// Returns whether the request must delete this item. A learning type
    /// matches its own sort key and the keys that continue with `#`, and
    /// user ids match byte for byte.
    pub fn contains(&self, table: &str, user_id: &str, sort_key: &str) -> bool {
        if table != self.table || user_id.as_bytes() != self.user_id.as_bytes() {
            return false;
        }
        match &self.learning_type {
            None => true,
            Some(learning_type) => match sort_key.strip_prefix(learning_type.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('#'),
                None => false,
            },
        }
    }
}

/// Reads every item of each table.
pub async fn snapshot_tables(client: &Client, tables: &[&str]) -> Tables {
    let mut snapshots = Tables::new();
    for table in tables {
        snapshots.insert((*table).to_owned(), snapshot(client, table).await);
    }
    snapshots
}

/// Checks invariants 1 to 4 for one request. `scope` is None for a request
/// that may delete nothing, such as one that the policy rejects.
///
/// # Errors
/// A description of the first broken invariant.
pub fn check_request(
    before: &Tables,
    after: &Tables,
    scope: Option<&Scope>,
    response: &Value,
) -> Result<(), String> {
    let status = check_response(response)?;
    if before.keys().ne(after.keys()) {
        return Err("the set of tables changed".to_owned());
    }

    let scope = match scope {
        Some(scope) if status == 204 || status >= 500 => scope,
        // A rejected request deletes nothing.
        _ => {
            return match first_difference(before, after, |_, _, _| true) {
                Some(difference) => Err(format!("a {status} response changed {difference}")),
                None => Ok(()),
            };
        }
    };

    let outside =
        |table: &str, user_id: &str, sort_key: &str| !scope.contains(table, user_id, sort_key);
    if let Some(difference) = first_difference(before, after, outside) {
        return Err(format!("an item outside {scope:?} changed: {difference}"));
    }

    for (table, items) in after {
        for ((user_id, sort_key), item) in items {
            if !scope.contains(table, user_id, sort_key) {
                continue;
            }
            if status == 204 {
                return Err(format!(
                    "a 204 left {user_id:?} {sort_key:?} in {table}, which the request matched"
                ));
            }
            let earlier = before[table].get(&(user_id.clone(), sort_key.clone()));
            if earlier != Some(item) {
                return Err(format!(
                    "a {status} left {user_id:?} {sort_key:?} in {table} that was not there as it is before the request"
                ));
            }
        }
    }
    Ok(())
}

/// Panics with the broken invariant, if any, for a request whose snapshots the
/// test took itself. Tests use it where [`invoke_checked`] cannot wrap the
/// call, such as a call with an invocation deadline or an event sent through
/// the `bootstrap` binary.
pub fn assert_invariants(before: &Tables, after: &Tables, scope: Option<&Scope>, response: &Value) {
    if let Err(broken) = check_request(before, after, scope, response) {
        panic!("invariant broken: {broken}\nresponse: {response}");
    }
}

/// Checks that a Lambda response has a documented status, and that an error
/// response has a JSON body with exactly the `detail` and `error_code` strings.
///
/// # Errors
/// A description of what is wrong with the response.
pub fn check_response(response: &Value) -> Result<u64, String> {
    let Some(status) = response["statusCode"].as_u64() else {
        return Err(format!("not an HTTP response: {response}"));
    };
    if !DOCUMENTED_STATUSES.contains(&status) {
        return Err(format!("undocumented status {status}: {response}"));
    }
    if status == 204 {
        let body = response["body"].as_str().unwrap_or_default();
        let typed = ["headers", "multiValueHeaders"]
            .iter()
            .any(|headers| response[headers].get("content-type").is_some());
        if !body.is_empty() || typed {
            return Err(format!("a 204 with a body or a content type: {response}"));
        }
        return Ok(status);
    }

    let body: Value = response["body"]
        .as_str()
        .and_then(|body| serde_json::from_str(body).ok())
        .ok_or_else(|| format!("a {status} without a JSON body: {response}"))?;
    let fields_are_strings = body["detail"].is_string() && body["error_code"].is_string();
    let field_count = body.as_object().map_or(0, |fields| fields.len());
    if !fields_are_strings || field_count != 2 {
        return Err(format!("a {status} with an undocumented body: {body}"));
    }
    let expected_code = match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHENTICATED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        422 => "VALIDATION_ERROR",
        _ => "INTERNAL_SERVER_ERROR",
    };
    if body["error_code"] != expected_code {
        return Err(format!(
            "a {status} with the error code of another status: {body}"
        ));
    }
    Ok(status)
}

/// Returns the first item, among those that `compared` selects, that differs
/// between the two states, as `table user_id sort_key`.
fn first_difference(
    before: &Tables,
    after: &Tables,
    compared: impl Fn(&str, &str, &str) -> bool,
) -> Option<String> {
    for (table, items_before) in before {
        let items_after = &after[table];
        let keys = items_before.keys().chain(items_after.keys());
        for key in keys {
            let (user_id, sort_key) = key;
            if compared(table, user_id, sort_key) && items_before.get(key) != items_after.get(key) {
                return Some(format!("{table} {user_id:?} {sort_key:?}"));
            }
        }
    }
    None
}

/// Sends one event through the handler with [`invoke`], and panics with the
/// broken invariant, if any. Snapshots `tables` before and after.
pub async fn invoke_checked(
    app: &App,
    client: &Client,
    tables: &[&str],
    event: &Value,
    scope: Option<&Scope>,
) -> Value {
    let before = snapshot_tables(client, tables).await;

    let response = invoke(app, event).await;

    let after = snapshot_tables(client, tables).await;
    if let Err(broken) = check_request(&before, &after, scope, &response) {
        panic!("invariant broken: {broken}\nevent: {event}");
    }
    response
}
