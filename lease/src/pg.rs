//! Owns the lease tables on PostgreSQL and the operations on them, each one statement (so each
//! is atomic on its own): membership heartbeats, rig registration, acquire, renew, release.
//! Every expiry is decided by the database's clock (`now()`). Knows nothing about assignment or
//! timing policy; that is the coordinator's.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use dtop_proto::RigId;
use riverqueue::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use riverqueue::sqlx::{self, PgPool};

use crate::{Epoch, TwinId};

/// How long a statement waits for a pooled connection before the database counts as away.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool: the coordinator runs one statement at a time; the rest is for a
/// caller's own reads (`leases`).
const MAX_CONNECTIONS: u32 = 4;
/// Serialises the `CREATE TABLE IF NOT EXISTS` of twins starting at once (two concurrent ones
/// can both miss the table and collide on its type). The engine's migrations use 7263001.
const SCHEMA_LOCK: i64 = 7_263_002;

const SCHEMA: &str = include_str!("schema.sql");

/// Why a lease operation failed. Either way the caller cannot know whether its write landed,
/// and its held leases keep running down towards their deadlines.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The database cannot be reached or is shutting down: retry at the next tick.
    #[error("lease database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused the statement (a wrong URL or credentials, a changed schema): an
    /// operator has to look.
    #[error("lease database refused a statement: {0}")]
    Database(#[source] sqlx::Error),
    /// A row this build cannot read (a rig or twin id another program wrote): an operator has to
    /// look.
    #[error("lease table holds {what} {value:?}, which is not valid")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The stored value.
        value: String,
    },
}

impl LeaseError {
    /// Whether this is the database being away (retry) rather than a fault to report.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for LeaseError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Whether `error` means the database is away (as `dtop-engine` classifies it).
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLSTATE classes: 08 connection exception, 57P admin shutdown / cannot connect
            // now, 53 insufficient resources.
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
        }
        _ => false,
    }
}

/// One rig's lease as stored, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub rig: RigId,
    /// The current or last holder; `None` before the first.
    pub owner: Option<TwinId>,
    /// The current or last tenure; [`Epoch::NEVER_OWNED`] before the first holder.
    pub epoch: Epoch,
    /// Whether the lease is held now, by the database's clock.
    pub live: bool,
}

/// The lease tables on one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgLeaseStore {
    pool: PgPool,
}

/// A duration in whole ms for `$n * interval '1 millisecond'`. Config caps TTLs at an hour, so
/// saturation never happens in practice; it only keeps a nonsense value from wrapping.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An epoch as stored. Epochs come from the table, so they fit; one that does not cannot match
/// any row, and -1 matches none (the column is checked `>= 0`).
fn stored_epoch(epoch: Epoch) -> i64 {
    i64::try_from(epoch.get()).unwrap_or(-1)
}

fn read_epoch(value: i64) -> Result<Epoch, LeaseError> {
    u64::try_from(value)
        .map(Epoch::new)
        .map_err(|_| LeaseError::Corrupt {
            what: "epoch",
            value: value.to_string(),
        })
}

fn read_rig(value: String) -> Result<RigId, LeaseError> {
    RigId::new(value.clone()).map_err(|_| LeaseError::Corrupt {
        what: "rig_id",
        value,
    })
}

fn read_twin(value: String) -> Result<TwinId, LeaseError> {
    TwinId::new(value.clone()).map_err(|_| LeaseError::Corrupt {
        what: "twin_id",
        value,
    })
}

impl PgLeaseStore {
    /// Connects to `url` (`postgres://…`) and creates the tables if they are missing.
    ///
    /// # Errors
    /// [`LeaseError::Database`] for a URL the driver refuses (the message does not repeat the
    /// URL, which may hold a password), `Unavailable` when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LeaseError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let store = Self::from_pool(pool);
        store.create_tables().await?;
        Ok(store)
    }

    /// Uses an existing pool (the caller has created the tables, or calls
    /// [`PgLeaseStore::create_tables`]).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the tables if they are missing, under an advisory lock so twins starting together
    /// do not collide.
    pub async fn create_tables(&self) -> Result<(), LeaseError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that `twin` is alive for `ttl` from now (database clock).
    pub async fn heartbeat(&self, twin: &TwinId, ttl: Duration) -> Result<(), LeaseError> {
        sqlx::query(
            "INSERT INTO dtop_twin_members (twin_id, expires_at) \
             VALUES ($1, now() + $2 * interval '1 millisecond') \
             ON CONFLICT (twin_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        )
        .bind(twin.as_str())
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes `twin` from the members at once (a graceful stop), so the others rebalance at
    /// their next tick instead of after the TTL.
    pub async fn leave(&self, twin: &TwinId) -> Result<(), LeaseError> {
        sqlx::query("DELETE FROM dtop_twin_members WHERE twin_id = $1")
            .bind(twin.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The twins whose membership has not expired, by id.
    pub async fn live_members(&self) -> Result<Vec<TwinId>, LeaseError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT twin_id FROM dtop_twin_members WHERE expires_at > now() ORDER BY twin_id",
        )
        .fetch_all(&self.pool)
        .await?;
        ids.into_iter().map(read_twin).collect()
    }

    /// Adds `rig` to the rigs to be owned (unowned, epoch 0); nothing if it is already there.
    pub async fn register_rig(&self, rig: &RigId) -> Result<(), LeaseError> {
        sqlx::query("INSERT INTO dtop_rig_leases (rig_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(rig.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every registered rig, by id.
    pub async fn rigs(&self) -> Result<Vec<RigId>, LeaseError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT rig_id FROM dtop_rig_leases ORDER BY rig_id")
                .fetch_all(&self.pool)
                .await?;
        ids.into_iter().map(read_rig).collect()
    }

    /// Starts a tenure of `rig` for `me`, for `ttl`: only if nobody holds it (never held,
    /// released, or lapsed) or its holder is `me` (this twin id, e.g. before a restart). Returns
    /// the new epoch, one more than the last, or `None` when another twin holds the rig or it is
    /// not registered.
    ///
    /// The epoch grows on every acquire, not only when the owner's id changes: a restarted twin
    /// must not share an epoch with its predecessor, whose messages may still be in flight.
    pub async fn acquire(
        &self,
        rig: &RigId,
        me: &TwinId,
        ttl: Duration,
    ) -> Result<Option<Epoch>, LeaseError> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE dtop_rig_leases \
             SET owner = $2, epoch = epoch + 1, \
                 expires_at = now() + $3 * interval '1 millisecond' \
             WHERE rig_id = $1 AND (owner IS NULL OR owner = $2 OR expires_at <= now()) \
             RETURNING epoch",
        )
        .bind(rig.as_str())
        .bind(me.as_str())
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await?;
        epoch.map(read_epoch).transpose()
    }

    /// Extends `me`'s tenure `epoch` of `rig` to `ttl` from now. `false` when the lease has lapsed
    /// or another tenure has begun: the caller must stop acting on the rig at once.
    pub async fn renew(
        &self,
        rig: &RigId,
        me: &TwinId,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        let done = sqlx::query(
            "UPDATE dtop_rig_leases SET expires_at = now() + $4 * interval '1 millisecond' \
             WHERE rig_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
        )
        .bind(rig.as_str())
        .bind(me.as_str())
        .bind(stored_epoch(epoch))
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`PgLeaseStore::renew`] for many tenures in one statement (a twin holds hundreds of rigs);
    /// returns the rigs renewed. Those missing must be given up.
    pub async fn renew_all(
        &self,
        me: &TwinId,
        held: &[(RigId, Epoch)],
        ttl: Duration,
    ) -> Result<BTreeSet<RigId>, LeaseError> {
        if held.is_empty() {
            return Ok(BTreeSet::new());
        }
        let rigs: Vec<String> = held.iter().map(|(r, _)| r.as_str().to_owned()).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| stored_epoch(*e)).collect();
        let renewed: Vec<String> = sqlx::query_scalar(
            "UPDATE dtop_rig_leases AS l \
             SET expires_at = now() + $4 * interval '1 millisecond' \
             FROM unnest($2::text[], $3::bigint[]) AS h(rig_id, epoch) \
             WHERE l.rig_id = h.rig_id AND l.epoch = h.epoch AND l.owner = $1 \
               AND l.expires_at > now() \
             RETURNING l.rig_id",
        )
        .bind(me.as_str())
        .bind(rigs)
        .bind(epochs)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await?;
        renewed.into_iter().map(read_rig).collect()
    }

    /// Ends `me`'s tenure `epoch` of `rig` now (a graceful handover), keeping the epoch so the
    /// next holder's is one more. `false` when that tenure had already ended.
    pub async fn release(
        &self,
        rig: &RigId,
        me: &TwinId,
        epoch: Epoch,
    ) -> Result<bool, LeaseError> {
        let done = sqlx::query(
            "UPDATE dtop_rig_leases SET expires_at = now() \
             WHERE rig_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
        )
        .bind(rig.as_str())
        .bind(me.as_str())
        .bind(stored_epoch(epoch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every rig's lease, by rig id.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, LeaseError> {
        let rows: Vec<(String, Option<String>, i64, bool)> = sqlx::query_as(
            "SELECT rig_id, owner, epoch, expires_at > now() FROM dtop_rig_leases ORDER BY rig_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(rig, owner, epoch, live)| {
                Ok(LeaseRow {
                    rig: read_rig(rig)?,
                    owner: owner.map(read_twin).transpose()?,
                    epoch: read_epoch(epoch)?,
                    live,
                })
            })
            .collect()
    }
}
