//! Table resolution: which configured DynamoDB table a request may touch.
//!
//! The catalog is the only source of table names. A request names a database
//! (`db_id`) and optionally one of its tables, and [`TableCatalog::resolve`]
//! returns a name from the catalog or an error, so no request can reach a
//! table that the deployment did not configure.

use std::collections::BTreeMap;

use crate::config::ConfigError;
use crate::errors::{ApiError, quote_for_detail};

/// The configured tables: an optional default, and each database's allowed tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCatalog {
    default_table: Option<String>,
    /// Each database's tables; the first is that database's default. Never empty.
    databases: BTreeMap<String, Vec<String>>,
}

impl TableCatalog {
    /// Builds the catalog from LEARNINGS_TABLE and LEARNINGS_DATABASES.
    ///
    /// LEARNINGS_DATABASES is a JSON object mapping each db_id to a non-empty
    /// array of table names, for example `{"eu": ["learnings_eu", "learnings_eu_archive"]}`.
    /// At least one of the two variables must be set.
    pub fn from_env_values(
        learnings_table: Option<&str>,
        learnings_databases: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let default_table = match learnings_table.map(str::trim) {
            Some(name) => {
                validate_table_name(name)
                    .map_err(|message| ConfigError::new("LEARNINGS_TABLE", message))?;
                Some(name.to_owned())
            }
            None => None,
        };

        let databases = match learnings_databases {
            Some(json) => parse_databases(json)?,
            None => BTreeMap::new(),
        };

        if default_table.is_none() && databases.is_empty() {
            return Err(ConfigError::new(
                "LEARNINGS_TABLE",
                "is not set; set LEARNINGS_TABLE to the learnings table, or LEARNINGS_DATABASES to a JSON object of db_id to table names",
            ));
        }

        Ok(Self {
            default_table,
            databases,
        })
    }

    /// Picks the table for a request's `db_id` and `table` query parameters.
    ///
    /// # Errors
    /// - 400 when `table` comes without `db_id`, or when several databases are
    ///   configured, no default table is set and no `db_id` is given;
    /// - 404 when `db_id` is not configured, or `table` is not one of its tables.
    pub fn resolve(&self, db_id: Option<&str>, table: Option<&str>) -> Result<&str, ApiError> {
        let Some(db_id) = db_id else {
            if table.is_some() {
                return Err(ApiError::BadRequest(
                    "The db_id query parameter is required when passing a table".to_owned(),
                ));
            }
            return self.default_without_db_id();
        };

        let Some(tables) = self.databases.get(db_id) else {
            return Err(ApiError::NotFound(format!(
                "No database found with id {}",
                quote_for_detail(db_id)
            )));
        };

        match table {
            None => Ok(tables[0].as_str()),
            Some(table) => tables
                .iter()
                .find(|configured| configured.as_str() == table)
                .map(String::as_str)
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "Table {} not found in database {}",
                        quote_for_detail(table),
                        quote_for_detail(db_id)
                    ))
                }),
        }
    }

    /// Lists every configured table once, for the start-up log line.
    pub fn all_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self.default_table.iter().map(String::as_str).collect();
        for table in self.databases.values().flatten() {
            if !tables.contains(&table.as_str()) {
                tables.push(table);
            }
        }
        tables
    }

    fn default_without_db_id(&self) -> Result<&str, ApiError> {
        if let Some(table) = &self.default_table {
            return Ok(table);
        }

        let mut databases = self.databases.values();
        match (databases.next(), databases.next()) {
            (Some(only), None) => Ok(only[0].as_str()),
            _ => Err(ApiError::BadRequest(
                "Several databases are configured: pass the db_id query parameter".to_owned(),
            )),
        }
    }
}

fn parse_databases(json: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    const VARIABLE: &str = "LEARNINGS_DATABASES";

    let entries: DatabaseEntries = serde_json::from_str(json).map_err(|error| {
        ConfigError::new(
            VARIABLE,
            format!("expected a JSON object of db_id to an array of table names: {error}"),
        )
    })?;

    // A map would keep only the last of two entries with the same db_id.
    let mut databases = BTreeMap::new();
    for (db_id, tables) in entries.0 {
        if databases.insert(db_id.clone(), tables).is_some() {
            return Err(ConfigError::new(
                VARIABLE,
                format!("database '{db_id}' is listed twice"),
            ));
        }
    }

    if databases.is_empty() {
        return Err(ConfigError::new(
            VARIABLE,
            "must name at least one database",
        ));
    }

    for (db_id, tables) in &databases {
        if db_id.is_empty() {
            return Err(ConfigError::new(VARIABLE, "a db_id must not be empty"));
        }
        if tables.is_empty() {
            return Err(ConfigError::new(
                VARIABLE,
                format!("database '{db_id}' must list at least one table"),
            ));
        }
        for table in tables {
            validate_table_name(table).map_err(|message| {
                ConfigError::new(VARIABLE, format!("database '{db_id}': {message}"))
            })?;
        }
    }

    Ok(databases)
}

/// The entries of LEARNINGS_DATABASES in document order, duplicates included.
struct DatabaseEntries(Vec<(String, Vec<String>)>);

impl<'de> serde::Deserialize<'de> for DatabaseEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = DatabaseEntries;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of db_id to an array of table names")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(DatabaseEntries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Checks a table name against DynamoDB's rules: 3 to 255 characters of
/// `[A-Za-z0-9_.-]`. A table ARN (`arn:...:table/NAME`), which DynamoDB also
/// accepts as TableName, passes when its name part does.
fn validate_table_name(name: &str) -> Result<(), String> {
    let bare_name = match name.strip_prefix("arn:") {
        Some(_) => name
            .split_once(":table/")
            .map(|(_, table)| table)
            .ok_or_else(|| format!("'{name}' is not a DynamoDB table ARN"))?,
        None => name,
    };

    let valid_length = (3..=255).contains(&bare_name.len());
    let valid_characters = bare_name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));

    if valid_length && valid_characters {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid DynamoDB table name (3 to 255 characters of A-Z, a-z, 0-9, '_', '.', '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(table: Option<&str>, databases: Option<&str>) -> TableCatalog {
        TableCatalog::from_env_values(table, databases).unwrap()
    }

    #[test]
    fn default_table_without_db_id() {
        let tables = catalog(Some("agno_learnings"), None);

        assert_eq!(tables.resolve(None, None).unwrap(), "agno_learnings");
    }

    #[test]
    fn table_without_db_id_is_400() {
        let tables = catalog(Some("agno_learnings"), None);

        let error = tables.resolve(None, Some("agno_learnings")).unwrap_err();

        assert_eq!(error.status(), 400);
        assert_eq!(
            error.detail(""),
            "The db_id query parameter is required when passing a table"
        );
    }

    #[test]
    fn db_id_picks_its_first_table() {
        let tables = catalog(
            None,
            Some(r#"{"eu": ["learnings_eu", "learnings_eu_archive"]}"#),
        );

        assert_eq!(tables.resolve(Some("eu"), None).unwrap(), "learnings_eu");
        assert_eq!(
            tables
                .resolve(Some("eu"), Some("learnings_eu_archive"))
                .unwrap(),
            "learnings_eu_archive"
        );
    }

    #[test]
    fn unknown_db_id_is_404() {
        let tables = catalog(Some("agno_learnings"), Some(r#"{"eu": ["learnings_eu"]}"#));

        let error = tables.resolve(Some("us"), None).unwrap_err();

        assert_eq!(error.status(), 404);
        assert_eq!(error.detail(""), "No database found with id 'us'");
    }

    #[test]
    fn unlisted_table_is_404() {
        let tables = catalog(Some("agno_learnings"), Some(r#"{"eu": ["learnings_eu"]}"#));

        let error = tables
            .resolve(Some("eu"), Some("agno_learnings"))
            .unwrap_err();

        assert_eq!(error.status(), 404);
    }

    #[test]
    fn several_databases_need_db_id() {
        let tables = catalog(
            None,
            Some(r#"{"eu": ["learnings_eu"], "us": ["learnings_us"]}"#),
        );

        let error = tables.resolve(None, None).unwrap_err();

        assert_eq!(error.status(), 400);
    }

    #[test]
    fn single_database_is_the_default() {
        let tables = catalog(None, Some(r#"{"eu": ["learnings_eu"]}"#));

        assert_eq!(tables.resolve(None, None).unwrap(), "learnings_eu");
    }

    #[test]
    fn invalid_databases_json_is_rejected() {
        for json in [
            "not json",
            "[]",
            "{}",
            r#"{"eu": []}"#,
            r#"{"eu": "learnings_eu"}"#,
            r#"{"eu": ["x"]}"#,
            r#"{"": ["learnings_eu"]}"#,
            r#"{"eu": ["learnings_eu"], "eu": ["learnings_us"]}"#,
        ] {
            let error = TableCatalog::from_env_values(None, Some(json)).unwrap_err();
            assert_eq!(error.variable, "LEARNINGS_DATABASES", "{json}");
        }
    }

    #[test]
    fn invalid_table_name_is_rejected() {
        let error = TableCatalog::from_env_values(Some("bad name!"), None).unwrap_err();

        assert_eq!(error.variable, "LEARNINGS_TABLE");
    }

    #[test]
    fn table_arn_is_accepted() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/agno_learnings";

        let tables = catalog(Some(arn), None);

        assert_eq!(tables.resolve(None, None).unwrap(), arn);
    }
}
