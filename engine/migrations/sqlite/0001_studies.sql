-- Studies engine schema (SQLite). JSON is kept as TEXT so both backends share one query set.

-- One row per named counter; 'revision' orders every study change (see ARCHITECTURE.md).
CREATE TABLE dtop_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO dtop_counters (name, value) VALUES ('revision', 0);

CREATE TABLE dtop_studies (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    model_ref     TEXT,
    model_name    TEXT,
    model         TEXT NOT NULL,
    params        TEXT NOT NULL,
    seed          BIGINT NOT NULL,
    submitted_by  TEXT NOT NULL,
    submitted_at  TEXT NOT NULL,
    finished_at   TEXT,
    state         TEXT NOT NULL,
    chunks_total  BIGINT NOT NULL,
    chunks_queued BIGINT NOT NULL,
    chunks_done   BIGINT NOT NULL,
    error         TEXT,
    revision      BIGINT NOT NULL
);
CREATE INDEX dtop_studies_revision ON dtop_studies (revision);

CREATE TABLE dtop_chunks (
    study_id    TEXT NOT NULL REFERENCES dtop_studies (id),
    chunk_index BIGINT NOT NULL,
    output      TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (study_id, chunk_index)
);

CREATE TABLE dtop_study_jobs (
    job_id   BIGINT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES dtop_studies (id)
);
CREATE INDEX dtop_study_jobs_study ON dtop_study_jobs (study_id);

CREATE TABLE dtop_results (
    study_id   TEXT PRIMARY KEY REFERENCES dtop_studies (id),
    summary    TEXT NOT NULL,
    arrays     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE dtop_models (
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
