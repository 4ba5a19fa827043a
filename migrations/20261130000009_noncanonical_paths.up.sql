-- no-transaction
-- The rows whose stored path is not already its own key (see
-- `janitor_path_key`), by key: normally none, so this index is empty. It
-- lets the orphan sweep and the row operations find, cheaply, every row that
-- refers to a file under another spelling (and every row whose path cannot
-- be normalised: their key is NULL). Queries must repeat the predicate
-- exactly, and compare keys with `COLLATE "C"`, to use it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS janitor_images_noncanonical_path
    ON images ((janitor_path_key(storage_path)) COLLATE "C")
    WHERE janitor_path_key(storage_path) IS DISTINCT FROM storage_path;
