-- Indexes the cleanup queries need. All are prefixed `janitor_` so that the
-- down migration removes only its own, never an index the application made.

-- Expired temporary images are claimed in id order (keyset pagination on
-- `id > cursor`). Leading with `id` keeps every batch's index scan starting
-- past the entries that earlier batches deleted, so batch time stays flat;
-- `expires_at` rides along so the filter and `stats` need no heap access.
CREATE INDEX IF NOT EXISTS janitor_images_temporary_expiry
    ON images (id, expires_at) WHERE storage_type = 'temporary';

-- A session's images, claimed in id order.
CREATE INDEX IF NOT EXISTS janitor_images_session
    ON images (session_id, id) WHERE session_id IS NOT NULL;

-- One index per task image column. They serve two purposes: the in-use check
-- (`... = ANY($ids)` on each column) and the `ON DELETE SET NULL` triggers,
-- which otherwise scan the whole task table for every deleted image.
CREATE INDEX IF NOT EXISTS janitor_tasks_husband_photo ON face_swap_tasks (husband_photo_id);
CREATE INDEX IF NOT EXISTS janitor_tasks_wife_photo    ON face_swap_tasks (wife_photo_id);
CREATE INDEX IF NOT EXISTS janitor_tasks_template      ON face_swap_tasks (template_id);
CREATE INDEX IF NOT EXISTS janitor_tasks_result_image  ON face_swap_tasks (result_image_id);

-- Finished tasks with a result image, by completion time (old-results).
CREATE INDEX IF NOT EXISTS janitor_tasks_finished_results
    ON face_swap_tasks (result_image_id, completed_at)
    WHERE status IN ('completed', 'failed') AND result_image_id IS NOT NULL;
