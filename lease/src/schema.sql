-- Rig leases (dtop-lease, ARCHITECTURE.md "Rig leases"). Idempotent: run at every connect.
-- Every expiry is on the database's clock (now()); no twin's wall clock is ever compared.

-- One row per live (or lately live) twin process; a twin counts as a member while expires_at is
-- in the future. The coordinator upserts its row every renew interval.
CREATE TABLE IF NOT EXISTS dtop_twin_members (
    twin_id    TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

-- One row per rig. owner and epoch stay after the lease lapses or is released (the last holder,
-- and the tenure the next holder increments); owner is NULL and epoch 0 until the first holder.
CREATE TABLE IF NOT EXISTS dtop_rig_leases (
    rig_id     TEXT PRIMARY KEY,
    owner      TEXT,
    epoch      BIGINT NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
