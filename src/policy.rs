//! Policy: may this caller delete this user's learnings?
//!
//! Mirrors AgentOS: admins and unscoped callers may delete any user's
//! learnings, and a scoped caller only their own. Unlike AgentOS, a token
//! without a user id is never unscoped.

use crate::config::AuthConfig;
use crate::errors::ApiError;
use crate::identity::{Caller, Claims};

/// The kind of caller a request was allowed as, as it appears in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// Holds the admin scope or an admin group.
    Admin,
    /// A scoped caller deleting their own learnings.
    OwnUser,
    /// An IAM principal, an anonymous caller under AUTH_ALLOW_ANONYMOUS, or
    /// any caller with a user id while AUTH_USER_ISOLATION is off.
    Unscoped,
}

impl CallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::OwnUser => "self",
            Self::Unscoped => "unscoped",
        }
    }
}

/// Decides whether `caller` may delete the learnings of `target_user_id`.
///
/// # Errors
/// 403 when a scoped caller has no user id, lacks a scope of
/// AUTH_REQUIRED_SCOPES, or names another user. The user ids are compared
/// byte for byte, with no case folding or Unicode normalization.
pub fn authorize(
    caller: &Caller,
    target_user_id: &str,
    config: &AuthConfig,
) -> Result<CallerKind, ApiError> {
    let claims = match caller {
        Caller::Iam { .. } | Caller::Anonymous => return Ok(CallerKind::Unscoped),
        Caller::Claims(claims) => claims,
    };

    if is_admin(claims, config) {
        return Ok(CallerKind::Admin);
    }

    let Some(user_id) = &claims.user_id else {
        return Err(ApiError::Forbidden(format!(
            "The token carries no user id in the '{}' claim, so it may delete no learnings",
            config.user_id_claim
        )));
    };

    if !config.user_isolation {
        return Ok(CallerKind::Unscoped);
    }

    let missing: Vec<&str> = config
        .required_scopes
        .iter()
        .filter(|scope| !claims.scopes.contains(*scope))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "The token lacks the required scopes: {}",
            missing.join(" ")
        )));
    }

    if user_id.as_bytes() != target_user_id.as_bytes() {
        return Err(ApiError::Forbidden(
            "Cannot delete learnings for another user".to_owned(),
        ));
    }

    Ok(CallerKind::OwnUser)
}

fn is_admin(claims: &Claims, config: &AuthConfig) -> bool {
    claims.scopes.contains(&config.admin_scope)
        || claims
            .groups
            .iter()
            .any(|group| config.admin_groups.contains(group))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::identity::AuthorizerKind;

    fn claims(user_id: Option<&str>, scopes: &[&str], groups: &[&str]) -> Caller {
        Caller::Claims(Claims {
            authorizer: AuthorizerKind::Jwt,
            user_id: user_id.map(str::to_owned),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
        })
    }

    #[test]
    fn policy_table() {
        let defaults = AuthConfig::default();
        let no_isolation = AuthConfig {
            user_isolation: false,
            ..AuthConfig::default()
        };
        let required = AuthConfig {
            required_scopes: BTreeSet::from(["learnings:delete".to_owned()]),
            ..AuthConfig::default()
        };

        type Case<'a> = (
            &'a str,
            Caller,
            &'a str,
            &'a AuthConfig,
            Result<CallerKind, u16>,
        );
        let cases: Vec<Case> = vec![
            (
                "own user",
                claims(Some("user-a"), &[], &[]),
                "user-a",
                &defaults,
                Ok(CallerKind::OwnUser),
            ),
            (
                "other user",
                claims(Some("user-a"), &[], &[]),
                "user-b",
                &defaults,
                Err(403),
            ),
            (
                "admin scope",
                claims(Some("ops"), &["agent_os:admin"], &[]),
                "user-b",
                &defaults,
                Ok(CallerKind::Admin),
            ),
            (
                "admin group",
                claims(Some("ops"), &[], &["admin"]),
                "user-b",
                &defaults,
                Ok(CallerKind::Admin),
            ),
            (
                "admin group without user id",
                claims(None, &[], &["admin"]),
                "user-b",
                &defaults,
                Ok(CallerKind::Admin),
            ),
            (
                "substring of admin group",
                claims(Some("ops"), &[], &["superadmin"]),
                "user-b",
                &defaults,
                Err(403),
            ),
            (
                "substring of admin scope",
                claims(Some("ops"), &["agent_os:admin2"], &[]),
                "user-b",
                &defaults,
                Err(403),
            ),
            (
                "no user id",
                claims(None, &[], &[]),
                "user-a",
                &defaults,
                Err(403),
            ),
            (
                "no user id, isolation off",
                claims(None, &[], &[]),
                "user-a",
                &no_isolation,
                Err(403),
            ),
            (
                "isolation off",
                claims(Some("user-a"), &[], &[]),
                "user-b",
                &no_isolation,
                Ok(CallerKind::Unscoped),
            ),
            (
                "case differs",
                claims(Some("User-A"), &[], &[]),
                "user-a",
                &defaults,
                Err(403),
            ),
            (
                "unicode normalization differs",
                claims(Some("caf\u{e9}"), &[], &[]),
                "cafe\u{301}",
                &defaults,
                Err(403),
            ),
            (
                "required scope held",
                claims(Some("user-a"), &["learnings:delete"], &[]),
                "user-a",
                &required,
                Ok(CallerKind::OwnUser),
            ),
            (
                "required scope missing",
                claims(Some("user-a"), &[], &[]),
                "user-a",
                &required,
                Err(403),
            ),
            (
                "admin skips required scope",
                claims(Some("ops"), &["agent_os:admin"], &[]),
                "user-a",
                &required,
                Ok(CallerKind::Admin),
            ),
            (
                "iam",
                Caller::Iam {
                    principal: "arn:aws:iam::123456789012:role/x".into(),
                },
                "user-a",
                &defaults,
                Ok(CallerKind::Unscoped),
            ),
            (
                "anonymous",
                Caller::Anonymous,
                "user-a",
                &defaults,
                Ok(CallerKind::Unscoped),
            ),
        ];

        for (name, caller, target, config, expected) in cases {
            let verdict = authorize(&caller, target, config).map_err(|error| error.status());
            assert_eq!(verdict, expected, "{name}");
        }
    }

    #[test]
    fn other_user_detail_matches_agentos() {
        let error = authorize(
            &claims(Some("user-a"), &[], &[]),
            "user-b",
            &AuthConfig::default(),
        )
        .unwrap_err();

        assert_eq!(error.detail(""), "Cannot delete learnings for another user");
        assert_eq!(error.error_code(), "FORBIDDEN");
    }
}
