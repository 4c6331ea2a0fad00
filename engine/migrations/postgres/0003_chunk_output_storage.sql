-- Chunk outputs are written once, read once by the reduce, and are mostly decimal digits of
-- floats that pglz shrinks little: store them out of line WITHOUT compression, which took
-- about a fifth of the server's CPU per `design` study (BENCHMARKS.md, "Session 14").
ALTER TABLE dtop_chunks ALTER COLUMN output SET STORAGE EXTERNAL;
