//! Owns the connection to PostgreSQL or SQLite: parsing and redacting `database_url`, the pool,
//! River's and our migrations, and classifying database errors into [`EngineError`]s. Knows
//! nothing about studies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use riverqueue::migrate::{PostgresMigrator, SqliteMigrator};
use riverqueue::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use riverqueue::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use riverqueue::sqlx::{self, PgPool, SqlitePool};

use crate::EngineError;

/// How long a query waits for a pooled connection before the database counts as away.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on another writer's lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Our migrations, numbered from 1, applied in order after River's.
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_studies.sql"),
    include_str!("../migrations/postgres/0002_inputs_and_review.sql"),
    include_str!("../migrations/postgres/0003_chunk_output_storage.sql"),
];
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_studies.sql"),
    include_str!("../migrations/sqlite/0002_inputs_and_review.sql"),
];

/// A pool on one of the two backends. Our queries are written once in the SQL both accept
/// (`$n` placeholders, `ON CONFLICT`, `RETURNING`) and run through [`on_db!`]/[`in_tx!`].
#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// PostgreSQL.
    Postgres(PgPool),
    /// An SQLite file in WAL mode.
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the backend's pool.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction bound to `$tx` and commits it; an early `?` return
/// drops (rolls back) the transaction. SQLite transactions begin `IMMEDIATE`, so two writers
/// queue on the lock instead of failing on a stale snapshot.
macro_rules! in_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres(pool) => {
                let mut $tx = riverqueue::database::begin_postgres(pool)
                    .await
                    .map_err($crate::db::sqlx_error)?;
                let out = $body;
                $tx.commit().await.map_err($crate::db::sqlx_error)?;
                out
            }
            $crate::db::Db::Sqlite(pool) => {
                let mut $tx = riverqueue::database::begin_sqlite_write(pool)
                    .await
                    .map_err($crate::db::sqlx_error)?;
                let out = $body;
                $tx.commit().await.map_err($crate::db::sqlx_error)?;
                out
            }
        }
    };
}

/// Takes the next study revision inside transaction `$tx`. The counter is one row, so
/// transactions that change studies commit in revision order (a reader that has seen revision
/// n has seen every change below n).
macro_rules! next_revision {
    ($tx:ident) => {
        riverqueue::sqlx::query_scalar::<_, i64>(
            "UPDATE dtop_counters SET value = value + 1 WHERE name = 'revision' RETURNING value",
        )
        .fetch_one(&mut *$tx)
        .await
        .map_err($crate::db::sqlx_error)?
    };
}

pub(crate) use {in_tx, next_revision, on_db};

/// A database URL that prints without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; anything else unchanged.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Which backend a URL names, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A `postgres://` or `postgresql://` URL.
    Postgres,
    /// An SQLite file at this path.
    Sqlite(String),
}

/// Reads the backend from the URL's scheme.
///
/// # Errors
/// A message naming the accepted schemes.
pub(crate) fn backend_of(url: &str) -> Result<Backend, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            Err("sqlite URL has no file path (sqlite:///abs/path.db or sqlite:rel.db)".to_owned())
        } else {
            Ok(Backend::Sqlite(path.to_owned()))
        }
    } else {
        Err(format!(
            "database_url {:?} must start with postgres://, postgresql://, sqlite:// or sqlite:",
            redact(url)
        ))
    }
}

/// Opens the pool and applies River's migrations, then ours.
///
/// # Errors
/// `Invalid` for a bad URL, `Unavailable` when the database cannot be reached, `Internal`
/// when a migration fails.
pub(crate) async fn connect(url: &DatabaseUrl) -> Result<Db, EngineError> {
    let backend = backend_of(url.expose()).map_err(|m| {
        EngineError::Invalid(vec![dtop_studies::FieldProblem::new("database_url", m)])
    })?;
    match backend {
        Backend::Postgres => {
            let options = PgConnectOptions::from_str(url.expose()).map_err(|e| {
                EngineError::Invalid(vec![dtop_studies::FieldProblem::new(
                    "database_url",
                    format!("{}: {e}", url.redacted()),
                )])
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(sqlx_error)?;
            PostgresMigrator::new(pool.clone())
                .migrate_up()
                .await
                .map_err(migrate_error)?;
            let db = Db::Postgres(pool);
            apply_ours(&db).await?;
            Ok(db)
        }
        Backend::Sqlite(path) => {
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(sqlx_error)?;
            SqliteMigrator::new(pool.clone())
                .migrate_up()
                .await
                .map_err(migrate_error)?;
            let db = Db::Sqlite(pool);
            apply_ours(&db).await?;
            Ok(db)
        }
    }
}

/// Applies our numbered migrations not yet recorded in `dtop_schema_migrations`, each in its
/// own transaction. On PostgreSQL an advisory lock keeps two processes starting at once from
/// applying the same one; SQLite's `BEGIN IMMEDIATE` does the same.
async fn apply_ours(db: &Db) -> Result<(), EngineError> {
    let migrations = match db {
        Db::Postgres(_) => POSTGRES_MIGRATIONS,
        Db::Sqlite(_) => SQLITE_MIGRATIONS,
    };
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS dtop_schema_migrations \
                          (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)";
    for (i, sql) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        in_tx!(db, tx => {
            if matches!(db, Db::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock(7263001)")
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
            }
            sqlx::query(CREATE).execute(&mut *tx).await.map_err(sqlx_error)?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM dtop_schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
            if done.is_none() {
                sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(|e| {
                    EngineError::Internal(format!("migration {version} failed: {e}"))
                })?;
                sqlx::query("INSERT INTO dtop_schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(crate::now_rfc3339())
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
            }
        });
    }
    Ok(())
}

/// Whether `error` means the database is away (retry later) rather than a wrong request.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLSTATE classes: 08 connection exception, 57P admin shutdown / cannot connect
            // now, 53 insufficient resources. SQLite 5/6 are BUSY/LOCKED.
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}

/// Maps a driver error to the caller's reaction.
pub(crate) fn sqlx_error(error: sqlx::Error) -> EngineError {
    if is_unavailable(&error) {
        EngineError::Unavailable(error.to_string())
    } else {
        EngineError::Internal(format!("database: {error}"))
    }
}

/// Maps a River migration error to the caller's reaction.
fn migrate_error(error: riverqueue::migrate::Error) -> EngineError {
    match error {
        riverqueue::migrate::Error::Database(e) => sqlx_error(e),
        other => EngineError::Internal(format!("job queue migration: {other}")),
    }
}

/// Maps a River error to the caller's reaction.
pub(crate) fn river_error(error: riverqueue::Error) -> EngineError {
    match error {
        riverqueue::Error::Database(e) => sqlx_error(e),
        other => EngineError::Internal(format!("job queue: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact("postgres://dtop:s3cret@db.example:5432/dtop?sslmode=require"),
            "postgres://dtop:***@db.example:5432/dtop?sslmode=require"
        );
        assert_eq!(redact("postgres://dtop@db/dtop"), "postgres://dtop@db/dtop");
        assert_eq!(
            redact("sqlite:///var/lib/dtop/studies.db"),
            "sqlite:///var/lib/dtop/studies.db"
        );
        let url = DatabaseUrl::new("postgres://u:pw@h/d");
        assert!(!format!("{url} {url:?}").contains("pw"));
    }

    #[test]
    fn reads_the_backend_from_the_scheme() {
        assert_eq!(backend_of("postgres://h/d"), Ok(Backend::Postgres));
        assert_eq!(backend_of("postgresql://h/d"), Ok(Backend::Postgres));
        assert_eq!(
            backend_of("sqlite:///tmp/a.db"),
            Ok(Backend::Sqlite("/tmp/a.db".into()))
        );
        assert_eq!(
            backend_of("sqlite:a.db"),
            Ok(Backend::Sqlite("a.db".into()))
        );
        assert!(backend_of("sqlite:").is_err());
        let Err(e) = backend_of("mysql://u:pw@h/d") else {
            panic!("a MySQL URL was accepted");
        };
        assert!(!e.contains("pw"), "{e}");
    }
}
