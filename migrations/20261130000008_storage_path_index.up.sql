-- no-transaction
-- The stored paths in byte order (`COLLATE "C"`, the order in which the
-- orphan sweep walks the storage), for the sweep's lookups and for the row
-- operations' check that no other row refers to a file they are about to
-- unlink. The application's own unique index (if any) usually has the
-- database's collation, which can serve neither byte order nor a
-- `COLLATE "C"` lookup. Built concurrently, so that the application keeps
-- writing while it builds. Without it the sweep refuses to run (it would read
-- the whole table for every batch).
CREATE INDEX CONCURRENTLY IF NOT EXISTS janitor_images_storage_path ON images (storage_path COLLATE "C");
