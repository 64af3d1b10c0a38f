//! Configuration read once from the environment at start-up.
//!
//! Every problem is a [`ConfigError`] that names the variable, so that a bad
//! deployment fails its first cold start with a log line saying what to fix,
//! instead of failing requests one by one.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;

use crate::tables::TableCatalog;
use crate::token::TokenConfig;

/// A missing or invalid environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration in {variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// Everything the handler needs besides the DynamoDB client.
#[derive(Debug, Clone)]
pub struct Config {
    pub tables: TableCatalog,
    pub auth: AuthConfig,
    /// Bearer-token verification, or None when no JWT key source is configured.
    pub token: Option<TokenConfig>,
    pub deletion: DeletionConfig,
    pub dynamodb: DynamoDbConfig,
    pub audit: AuditConfig,
}

/// Settings of the audit record and of the metrics it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// CloudWatch namespace of the metrics (METRICS_NAMESPACE, default `AgentOS/Learnings`).
    pub namespace: String,
    /// A dimension of the metrics (AWS_LAMBDA_FUNCTION_NAME, which Lambda sets).
    pub function_name: Option<String>,
    /// The key that hashes user ids in the record, when AUDIT_HASH_USER_IDS
    /// is true. It comes from AUDIT_HASH_KEY.
    pub user_id_key: Option<AuditKey>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_METRICS_NAMESPACE.to_owned(),
            function_name: None,
            user_id_key: None,
        }
    }
}

/// The metrics namespace unless METRICS_NAMESPACE sets another.
pub const DEFAULT_METRICS_NAMESPACE: &str = "AgentOS/Learnings";

/// The shortest AUDIT_HASH_KEY, in bytes: the output size of SHA-256, which
/// RFC 2104 gives as the least key length for HMAC-SHA256.
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// The secret key of the user id hashes. Its Debug output hides the key, so
/// that it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    pub fn new(key: Vec<u8>) -> Self {
        Self(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AuditKey(redacted)")
    }
}

/// Settings of the identity and policy steps, with AgentOS's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The claim that carries the caller's user id (AUTH_USER_ID_CLAIM, default `sub`).
    pub user_id_claim: String,
    /// The scope that makes a caller an admin (AUTH_ADMIN_SCOPE, default `agent_os:admin`).
    pub admin_scope: String,
    /// The Cognito groups that make a caller an admin (AUTH_ADMIN_GROUPS, default `admin`).
    pub admin_groups: BTreeSet<String>,
    /// Whether callers with claims are scoped to their own user id (AUTH_USER_ISOLATION, default true).
    pub user_isolation: bool,
    /// Scopes that every scoped caller must hold (AUTH_REQUIRED_SCOPES, default none).
    pub required_scopes: BTreeSet<String>,
    /// Whether a request without any identity acts unscoped (AUTH_ALLOW_ANONYMOUS, default false).
    /// A local-development switch only.
    pub allow_anonymous: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            user_id_claim: "sub".to_owned(),
            admin_scope: "agent_os:admin".to_owned(),
            admin_groups: BTreeSet::from(["admin".to_owned()]),
            user_isolation: true,
            required_scopes: BTreeSet::new(),
            allow_anonymous: false,
        }
    }
}

/// Settings of the deletion: its parallelism, its time reserve and its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionConfig {
    /// Maximum number of BatchWriteItem calls in flight (DELETE_CONCURRENCY, default 8).
    pub concurrency: usize,
    /// Time kept free before the invocation deadline (DELETE_DEADLINE_MARGIN_MS,
    /// default 1,000 ms). Once less remains, no new call starts.
    pub deadline_margin: Duration,
    pub retry: RetryPolicy,
}

/// The default of DELETE_CONCURRENCY, chosen by the concurrency sweep in BENCHMARKS.md.
pub const DEFAULT_DELETE_CONCURRENCY: usize = 8;

/// The upper bound of DELETE_CONCURRENCY. One partition absorbs about 1,000
/// deletes a second, so more calls in flight only queue up behind throttling.
pub const MAX_DELETE_CONCURRENCY: usize = 64;

/// The lower bound of DELETE_DEADLINE_MARGIN_MS: the deletion itself keeps
/// 200 ms for the response, and the rest lets in-flight calls finish.
pub const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(250);

impl Default for DeletionConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_DELETE_CONCURRENCY,
            deadline_margin: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        }
    }
}

/// Timeouts and retries of the DynamoDB client.
///
/// Throttling, 5xx errors, timeouts and dropped connections are retried by the
/// SDK's standard retry mode with exponential backoff and jitter. An attempt
/// without a response within `attempt_timeout` is abandoned and retried, so
/// one stalled connection cannot keep a batch waiting until the invocation deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbConfig {
    /// Time to open a connection (DYNAMODB_CONNECT_TIMEOUT_MS, default 1,000 ms).
    pub connect_timeout: Duration,
    /// Time for one attempt of a call, from sending to the parsed response
    /// (DYNAMODB_ATTEMPT_TIMEOUT_MS, default 2,000 ms).
    pub attempt_timeout: Duration,
    /// Attempts of one call, the first included (DYNAMODB_MAX_ATTEMPTS, default 5).
    pub max_attempts: u32,
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 5,
        }
    }
}

impl DynamoDbConfig {
    /// The SDK's delay before the first retry, doubled for each later one up to
    /// [`Self::MAX_BACKOFF`], with full jitter.
    pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

    /// Returns the SDK timeout settings.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }

    /// Returns the SDK retry settings: standard mode with this config's attempts.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(Self::INITIAL_BACKOFF)
            .with_max_backoff(Self::MAX_BACKOFF)
    }
}

/// Backoff for the UnprocessedItems that BatchWriteItem hands back.
///
/// The delay before retry `n` (counting from 0) is drawn uniformly from
/// `0..=min(max_delay, base_delay * 2^n)`: exponential backoff with full
/// jitter, which spreads out retries that a throttled partition would otherwise
/// receive in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Maximum number of BatchWriteItem calls for one batch, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Ten attempts sleep at most about 9 s in all, which leaves room inside
    /// the 25 s function timeout of the SAM template.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Returns the delay before retry `retry` (0 for the first retry), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_delay);
        let ceiling_micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);

        Duration::from_micros(fastrand::u64(0..=ceiling_micros))
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if it is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let tables = TableCatalog::from_env_values(
            lookup("LEARNINGS_TABLE").as_deref(),
            lookup("LEARNINGS_DATABASES").as_deref(),
        )?;

        let defaults = AuthConfig::default();
        let auth = AuthConfig {
            user_id_claim: read_name(&lookup, "AUTH_USER_ID_CLAIM")?
                .unwrap_or(defaults.user_id_claim),
            admin_scope: read_name(&lookup, "AUTH_ADMIN_SCOPE")?.unwrap_or(defaults.admin_scope),
            admin_groups: read_list(&lookup, "AUTH_ADMIN_GROUPS")?.unwrap_or(defaults.admin_groups),
            user_isolation: read_bool(&lookup, "AUTH_USER_ISOLATION")?
                .unwrap_or(defaults.user_isolation),
            required_scopes: read_list(&lookup, "AUTH_REQUIRED_SCOPES")?.unwrap_or_default(),
            allow_anonymous: read_bool(&lookup, "AUTH_ALLOW_ANONYMOUS")?.unwrap_or(false),
        };

        Ok(Self {
            tables,
            auth,
            token: TokenConfig::from_lookup(&lookup)?,
            deletion: read_deletion_config(&lookup)?,
            dynamodb: read_dynamodb_config(&lookup)?,
            audit: read_audit_config(&lookup)?,
        })
    }
}

fn read_audit_config(lookup: &impl Fn(&str) -> Option<String>) -> Result<AuditConfig, ConfigError> {
    let namespace = match lookup("METRICS_NAMESPACE") {
        Some(namespace) => validate_namespace(namespace.trim())?,
        None => DEFAULT_METRICS_NAMESPACE.to_owned(),
    };
    let function_name = lookup("AWS_LAMBDA_FUNCTION_NAME").filter(|name| !name.is_empty());

    let hash_user_ids = read_bool(lookup, "AUDIT_HASH_USER_IDS")?.unwrap_or(false);
    let key = lookup("AUDIT_HASH_KEY");
    let user_id_key = match (hash_user_ids, key) {
        (false, _) => None,
        (true, None) => {
            return Err(ConfigError::new(
                "AUDIT_HASH_KEY",
                format!(
                    "is not set, but AUDIT_HASH_USER_IDS is true; set it to a secret of at least {MIN_AUDIT_KEY_BYTES} bytes"
                ),
            ));
        }
        // Whitespace around the key does not count, so that a blank or
        // padded value cannot pass for a secret. The key itself is used as set.
        (true, Some(key)) if key.trim().len() < MIN_AUDIT_KEY_BYTES => {
            // The message gives the length only, never the key.
            return Err(ConfigError::new(
                "AUDIT_HASH_KEY",
                format!(
                    "is {} bytes long without its leading and trailing whitespace; it must be at least {MIN_AUDIT_KEY_BYTES} bytes",
                    key.trim().len()
                ),
            ));
        }
        (true, Some(key)) => Some(AuditKey::new(key.into_bytes())),
    };

    Ok(AuditConfig {
        namespace,
        function_name,
        user_id_key,
    })
}

/// Checks a CloudWatch namespace: 1 to 255 characters of letters, digits and
/// `. - _ / # :` or spaces, not starting with `:` or with `AWS/`, which AWS
/// reserves for its own metrics.
fn validate_namespace(namespace: &str) -> Result<String, ConfigError> {
    let allowed =
        |character: char| character.is_ascii_alphanumeric() || " .-_/#:".contains(character);
    if namespace.is_empty()
        || namespace.len() > 255
        || !namespace.chars().all(allowed)
        || namespace.starts_with(':')
        || namespace.starts_with("AWS/")
    {
        return Err(ConfigError::new(
            "METRICS_NAMESPACE",
            format!(
                "expected 1 to 255 letters, digits, spaces or '.-_/#:' that do not start with ':' or 'AWS/', got '{namespace}'"
            ),
        ));
    }
    Ok(namespace.to_owned())
}

fn read_deletion_config(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<DeletionConfig, ConfigError> {
    let defaults = DeletionConfig::default();

    let concurrency = read_integer(
        lookup,
        "DELETE_CONCURRENCY",
        1,
        MAX_DELETE_CONCURRENCY as u64,
    )?
    .map_or(defaults.concurrency, |value| value as usize);

    let min_margin = MIN_DEADLINE_MARGIN.as_millis() as u64;
    let deadline_margin = read_integer(lookup, "DELETE_DEADLINE_MARGIN_MS", min_margin, 60_000)?
        .map_or(defaults.deadline_margin, Duration::from_millis);

    Ok(DeletionConfig {
        concurrency,
        deadline_margin,
        retry: defaults.retry,
    })
}

fn read_dynamodb_config(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<DynamoDbConfig, ConfigError> {
    let defaults = DynamoDbConfig::default();

    let connect_timeout = read_integer(lookup, "DYNAMODB_CONNECT_TIMEOUT_MS", 10, 60_000)?
        .map_or(defaults.connect_timeout, Duration::from_millis);
    let attempt_timeout = read_integer(lookup, "DYNAMODB_ATTEMPT_TIMEOUT_MS", 100, 60_000)?
        .map_or(defaults.attempt_timeout, Duration::from_millis);
    let max_attempts = read_integer(lookup, "DYNAMODB_MAX_ATTEMPTS", 1, 20)?
        .map_or(defaults.max_attempts, |value| value as u32);

    Ok(DynamoDbConfig {
        connect_timeout,
        attempt_timeout,
        max_attempts,
    })
}

/// Reads a whole number within `min..=max`.
fn read_integer(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    let Some(value) = lookup(variable) else {
        return Ok(None);
    };

    match value.trim().parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(Some(number)),
        _ => Err(ConfigError::new(
            variable,
            format!(
                "expected a whole number from {min} to {max}, got '{}'",
                value.trim()
            ),
        )),
    }
}

/// Reads a single name, such as a claim or scope. Set but blank is an error,
/// because it would silently match nothing.
fn read_name(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<String>, ConfigError> {
    match lookup(variable) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => {
            Err(ConfigError::new(variable, "must not be empty"))
        }
        Some(value) => Ok(Some(value.trim().to_owned())),
    }
}

/// Reads a comma-separated list. An empty value means an empty list.
fn read_list(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<BTreeSet<String>>, ConfigError> {
    let Some(value) = lookup(variable) else {
        return Ok(None);
    };

    let items = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Some(items))
}

fn read_bool(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<bool>, ConfigError> {
    let Some(value) = lookup(variable) else {
        return Ok(None);
    };

    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err(ConfigError::new(
            variable,
            format!(
                "expected true or false (or 1/0, yes/no), got '{}'",
                value.trim()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Config::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_follow_agentos() {
        let config = config_from(&[("LEARNINGS_TABLE", "agno_learnings")]).unwrap();

        assert_eq!(config.auth, AuthConfig::default());
        assert_eq!(config.auth.user_id_claim, "sub");
        assert_eq!(config.auth.admin_scope, "agent_os:admin");
        assert!(config.auth.user_isolation);
        assert!(!config.auth.allow_anonymous);
    }

    #[test]
    fn admin_groups_split_on_commas() {
        let config = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUTH_ADMIN_GROUPS", "admin, ops ,,support"),
        ])
        .unwrap();

        let expected: BTreeSet<String> = ["admin", "ops", "support"].map(String::from).into();
        assert_eq!(config.auth.admin_groups, expected);
    }

    #[test]
    fn invalid_boolean_names_variable() {
        let error = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUTH_USER_ISOLATION", "maybe"),
        ])
        .unwrap_err();

        assert_eq!(error.variable, "AUTH_USER_ISOLATION");
        assert!(error.to_string().contains("maybe"));
    }

    #[test]
    fn blank_claim_name_is_rejected() {
        let error = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUTH_USER_ID_CLAIM", "  "),
        ])
        .unwrap_err();

        assert_eq!(error.variable, "AUTH_USER_ID_CLAIM");
    }

    #[test]
    fn missing_table_names_variable() {
        let error = config_from(&[]).unwrap_err();

        assert_eq!(error.variable, "LEARNINGS_TABLE");
    }

    #[test]
    fn deletion_defaults_apply_when_unset() {
        let config = config_from(&[("LEARNINGS_TABLE", "agno_learnings")]).unwrap();

        assert_eq!(config.deletion, DeletionConfig::default());
        assert_eq!(config.deletion.concurrency, DEFAULT_DELETE_CONCURRENCY);
    }

    #[test]
    fn deletion_settings_are_read() {
        let config = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("DELETE_CONCURRENCY", " 16 "),
            ("DELETE_DEADLINE_MARGIN_MS", "2500"),
        ])
        .unwrap();

        assert_eq!(config.deletion.concurrency, 16);
        assert_eq!(config.deletion.deadline_margin, Duration::from_millis(2500));
    }

    #[test]
    fn concurrency_out_of_range_is_rejected() {
        for value in ["0", "65", "-1", "eight", ""] {
            let error = config_from(&[
                ("LEARNINGS_TABLE", "agno_learnings"),
                ("DELETE_CONCURRENCY", value),
            ])
            .unwrap_err();

            assert_eq!(error.variable, "DELETE_CONCURRENCY", "value {value:?}");
            assert!(error.message.contains("from 1 to 64"), "{error}");
        }
    }

    #[test]
    fn margin_under_minimum_is_rejected() {
        let error = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("DELETE_DEADLINE_MARGIN_MS", "100"),
        ])
        .unwrap_err();

        assert_eq!(error.variable, "DELETE_DEADLINE_MARGIN_MS");
        assert!(error.message.contains("from 250 to 60000"), "{error}");
    }

    #[test]
    fn dynamodb_settings_are_read() {
        let config = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("DYNAMODB_CONNECT_TIMEOUT_MS", "250"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "1500"),
            ("DYNAMODB_MAX_ATTEMPTS", "3"),
        ])
        .unwrap();

        assert_eq!(config.dynamodb.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.dynamodb.attempt_timeout, Duration::from_millis(1500));
        assert_eq!(config.dynamodb.max_attempts, 3);
        assert_eq!(config.dynamodb.retry_config().max_attempts(), 3);
        assert_eq!(
            config.dynamodb.timeout_config().operation_attempt_timeout(),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn dynamodb_settings_out_of_range_are_rejected() {
        for (variable, value) in [
            ("DYNAMODB_CONNECT_TIMEOUT_MS", "0"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "99"),
            ("DYNAMODB_MAX_ATTEMPTS", "0"),
            ("DYNAMODB_MAX_ATTEMPTS", "21"),
        ] {
            let error = config_from(&[("LEARNINGS_TABLE", "agno_learnings"), (variable, value)])
                .unwrap_err();

            assert_eq!(error.variable, variable, "value {value}");
        }
    }

    #[test]
    fn backoff_stays_under_ceiling() {
        let policy = RetryPolicy::default();

        for retry in 0..40 {
            let ceiling = policy
                .base_delay
                .saturating_mul(2u32.saturating_pow(retry))
                .min(policy.max_delay);
            assert!(policy.backoff(retry) <= ceiling, "retry {retry}");
        }
    }

    #[test]
    fn audit_defaults_keep_ids_plain() {
        let config = config_from(&[("LEARNINGS_TABLE", "agno_learnings")]).unwrap();

        assert_eq!(config.audit.namespace, "AgentOS/Learnings");
        assert_eq!(config.audit.function_name, None);
        assert_eq!(config.audit.user_id_key, None);
    }

    #[test]
    fn audit_hashing_reads_key() {
        let key = "0123456789abcdef0123456789abcdef";
        let config = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", key),
            ("AWS_LAMBDA_FUNCTION_NAME", "delete-learning-user"),
        ])
        .unwrap();

        let stored = config.audit.user_id_key.as_ref().unwrap();
        assert_eq!(stored.as_bytes(), key.as_bytes());
        assert!(
            !format!("{config:?}").contains(key),
            "Debug must hide the key"
        );
        assert_eq!(
            config.audit.function_name.as_deref(),
            Some("delete-learning-user")
        );
    }

    #[test]
    fn audit_hashing_needs_long_key() {
        let missing = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
        ])
        .unwrap_err();
        let short = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", "short-secret"),
        ])
        .unwrap_err();

        let padded = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", "  short-secret-padded-with-spaces  \n"),
        ])
        .unwrap_err();
        let blank = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_USER_IDS", "true"),
            ("AUDIT_HASH_KEY", &" ".repeat(MIN_AUDIT_KEY_BYTES)),
        ])
        .unwrap_err();

        assert_eq!(missing.variable, "AUDIT_HASH_KEY");
        assert_eq!(short.variable, "AUDIT_HASH_KEY");
        assert!(!short.to_string().contains("short-secret"));
        assert_eq!(padded.variable, "AUDIT_HASH_KEY");
        assert!(padded.to_string().contains("is 31 bytes long"), "{padded}");
        assert!(
            !padded.to_string().contains("padded-with-spaces"),
            "{padded}"
        );
        assert_eq!(blank.variable, "AUDIT_HASH_KEY");
        assert!(blank.to_string().contains("is 0 bytes long"), "{blank}");
    }

    #[test]
    fn key_without_hashing_is_ignored() {
        let config = config_from(&[
            ("LEARNINGS_TABLE", "agno_learnings"),
            ("AUDIT_HASH_KEY", "short"),
        ])
        .unwrap();

        assert_eq!(config.audit.user_id_key, None);
    }

    #[test]
    fn metrics_namespace_is_checked() {
        for valid in ["Team/Learnings", "agentos.prod", "My App #2: deletes"] {
            let config = config_from(&[
                ("LEARNINGS_TABLE", "agno_learnings"),
                ("METRICS_NAMESPACE", valid),
            ])
            .unwrap();
            assert_eq!(config.audit.namespace, valid);
        }

        for invalid in ["", "AWS/Lambda", ":leading", "tabs\there", "ünicode"] {
            let error = config_from(&[
                ("LEARNINGS_TABLE", "agno_learnings"),
                ("METRICS_NAMESPACE", invalid),
            ])
            .unwrap_err();
            assert_eq!(error.variable, "METRICS_NAMESPACE", "{invalid:?}");
        }
    }
}
