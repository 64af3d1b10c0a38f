//! Routing and validation: from an [`HttpEvent`] to a [`DeleteRequest`].
//!
//! Everything here runs before any DynamoDB call, so a request that fails a
//! check deletes nothing.

use std::str::Utf8Error;

use crate::errors::ApiError;
use crate::event::{HttpEvent, PathTarget, QueryParam};

/// DynamoDB's maximum size of a partition key value, in bytes of UTF-8.
pub const MAX_USER_ID_BYTES: usize = 2048;

/// The maximum length of a learning type, in bytes of UTF-8.
pub const MAX_LEARNING_TYPE_BYTES: usize = 255;

/// The separator between a learning type and a record id in the sort key
/// (`entity_memory#acme`), which a learning type itself must not contain.
pub const RECORD_SEPARATOR: char = '#';

/// A validated request to delete a user's learnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The partition key value, percent-decoded exactly once.
    pub user_id: String,
    /// Restricts the deletion to one learning type when present.
    pub learning_type: Option<String>,
    pub db_id: Option<String>,
    pub table: Option<String>,
}

/// Checks that the event is `DELETE /learnings/users/{user_id}`, and returns
/// the still unvalidated user id.
///
/// # Errors
/// 404 for any other path, and 405 for another method on this path.
pub fn route<'e>(event: &'e HttpEvent<'_>) -> Result<&'e Result<String, Utf8Error>, ApiError> {
    let PathTarget::UserId(user_id) = &event.target else {
        return Err(ApiError::NotFound("Not Found".to_owned()));
    };

    if event.method != "DELETE" {
        return Err(ApiError::MethodNotAllowed {
            method: event.method.to_owned(),
        });
    }

    Ok(user_id)
}

/// Validates the user id and the query parameters.
///
/// # Errors
/// 422 for an empty, oversized or control-character user id, an empty or
/// repeated `learning_type`, `db_id` or `table`, and a learning type that
/// contains `#` or control characters or is over 255 bytes.
pub fn validate(
    user_id: &Result<String, Utf8Error>,
    query: &[QueryParam],
) -> Result<DeleteRequest, ApiError> {
    let user_id = user_id
        .as_ref()
        .map_err(|_| invalid("user_id is not valid UTF-8 after percent-decoding"))?;
    validate_user_id(user_id)?;

    let learning_type = single_parameter(query, "learning_type")?;
    if let Some(learning_type) = &learning_type {
        validate_learning_type(learning_type)?;
    }

    Ok(DeleteRequest {
        user_id: user_id.clone(),
        learning_type,
        db_id: single_parameter(query, "db_id")?,
        table: single_parameter(query, "table")?,
    })
}

fn validate_user_id(user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() {
        return Err(invalid("user_id must not be empty"));
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(invalid(format!(
            "user_id is {} bytes long; the maximum is {MAX_USER_ID_BYTES} bytes of UTF-8",
            user_id.len()
        )));
    }
    if user_id.chars().any(char::is_control) {
        return Err(invalid("user_id must not contain control characters"));
    }
    Ok(())
}

fn validate_learning_type(learning_type: &str) -> Result<(), ApiError> {
    if learning_type.contains(RECORD_SEPARATOR) {
        return Err(invalid(format!(
            "learning_type must not contain '{RECORD_SEPARATOR}', which separates a type from a record id"
        )));
    }
    if learning_type.len() > MAX_LEARNING_TYPE_BYTES {
        return Err(invalid(format!(
            "learning_type is {} bytes long; the maximum is {MAX_LEARNING_TYPE_BYTES} bytes of UTF-8",
            learning_type.len()
        )));
    }
    if learning_type.chars().any(char::is_control) {
        return Err(invalid("learning_type must not contain control characters"));
    }
    Ok(())
}

/// Returns the one value of a parameter, or None when it is absent.
///
/// # Errors
/// 422 when the parameter is repeated, empty, or not UTF-8.
fn single_parameter(query: &[QueryParam], name: &str) -> Result<Option<String>, ApiError> {
    let mut values = query.iter().filter(|param| param.name == name);

    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid(format!("{name} must be given at most once")));
    }

    let value = first
        .value
        .as_ref()
        .map_err(|_| invalid(format!("{name} is not valid UTF-8 after percent-decoding")))?;
    if value.is_empty() {
        return Err(invalid(format!("{name} must not be empty")));
    }

    Ok(Some(value.clone()))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::Validation(detail.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: &str) -> QueryParam {
        QueryParam {
            name: name.to_owned(),
            value: Ok(value.to_owned()),
        }
    }

    fn validate_with(user_id: &str, query: &[QueryParam]) -> Result<DeleteRequest, ApiError> {
        validate(&Ok(user_id.to_owned()), query)
    }

    #[test]
    fn valid_request_is_accepted() {
        let request = validate_with(
            "idp|user-c",
            &[
                param("learning_type", "entity_memory"),
                param("unknown", "x"),
            ],
        )
        .unwrap();

        assert_eq!(request.user_id, "idp|user-c");
        assert_eq!(request.learning_type.as_deref(), Some("entity_memory"));
        assert_eq!(request.db_id, None);
        assert_eq!(request.table, None);
    }

    #[test]
    fn bad_user_ids_are_422() {
        let too_long = "u".repeat(MAX_USER_ID_BYTES + 1);
        for user_id in [
            "",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            too_long.as_str(),
        ] {
            let error = validate_with(user_id, &[]).unwrap_err();
            assert_eq!(error.status(), 422, "{user_id:?}");
            assert_eq!(error.error_code(), "VALIDATION_ERROR");
        }
    }

    #[test]
    fn user_id_at_limit_is_accepted() {
        let multibyte = "é".repeat(MAX_USER_ID_BYTES / 2);

        assert!(validate_with(&"u".repeat(MAX_USER_ID_BYTES), &[]).is_ok());
        assert!(validate_with(&multibyte, &[]).is_ok());
        assert!(validate_with(&format!("{multibyte}x"), &[]).is_err());
    }

    #[test]
    fn bad_learning_types_are_422() {
        let too_long = "t".repeat(MAX_LEARNING_TYPE_BYTES + 1);
        for learning_type in ["", "entity_memory#acme", "a\u{1}", too_long.as_str()] {
            let error =
                validate_with("user-a", &[param("learning_type", learning_type)]).unwrap_err();
            assert_eq!(error.status(), 422, "{learning_type:?}");
        }
    }

    #[test]
    fn repeated_parameters_are_422() {
        for name in ["learning_type", "db_id", "table"] {
            let error = validate_with("user-a", &[param(name, "a"), param(name, "a")]).unwrap_err();
            assert_eq!(error.status(), 422, "{name}");
            assert_eq!(
                error.detail(""),
                format!("{name} must be given at most once")
            );
        }
    }

    #[test]
    fn empty_parameters_are_422() {
        for name in ["learning_type", "db_id", "table"] {
            let error = validate_with("user-a", &[param(name, "")]).unwrap_err();
            assert_eq!(error.status(), 422, "{name}");
        }
    }

    #[test]
    fn invalid_utf8_is_422() {
        let not_utf8 = String::from_utf8(vec![0xff]).unwrap_err().utf8_error();

        let error = validate(&Err(not_utf8), &[]).unwrap_err();

        assert_eq!(error.status(), 422);
    }
}
