-- Studies take measured inputs (issue 14): each study lists its input tables, kept in the result
-- store by content hash, as a JSON array of ArrayRef.
ALTER TABLE dtop_studies ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';
-- A study may propose a model version: the result names it (`name@version`).
ALTER TABLE dtop_results ADD COLUMN proposed_model TEXT;
-- Model versions have a status: 'current' (built in, or added by hand or from a file),
-- 'proposed' (filed by a study, awaiting review), 'approved' or 'rejected' (reviewed: who,
-- when, why). Only a proposed version can be reviewed, once.
ALTER TABLE dtop_models ADD COLUMN status TEXT NOT NULL DEFAULT 'current';
ALTER TABLE dtop_models ADD COLUMN reviewed_by TEXT;
ALTER TABLE dtop_models ADD COLUMN reviewed_at TEXT;
ALTER TABLE dtop_models ADD COLUMN review_note TEXT;
