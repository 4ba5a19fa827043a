-- Row cleanups (expired, session, old results) decide from the tasks that
-- reference an image, and that decision holds until the commit only
-- because of the foreign keys from face_swap_tasks to images: a task that
-- starts to use an image takes `FOR KEY SHARE` on it in its key check,
-- which waits for the batch's `FOR UPDATE`, and fails once the delete
-- commits. On an application schema without them (janitor leaves an
-- existing table alone), a pending task inserted while a batch runs would
-- not be seen, and its image would be deleted. `ON DELETE SET NULL` is
-- needed as well: CASCADE would delete the task rows (which cleanups keep),
-- and NO ACTION or RESTRICT would fail every batch that deletes an image a
-- finished task still names.
--
-- janitor_task_keys_problem() names the first image column of
-- face_swap_tasks without such a key (NULL when all four have one);
-- janitor_require_task_keys() raises SQLSTATE JN001 with that text. Every
-- batch's DELETE calls it, inside the transaction whose task lookup holds
-- face_swap_tasks in ACCESS SHARE mode, so a key cannot be dropped
-- (ACCESS EXCLUSIVE) between the check and the delete. Switching its
-- triggers off (DISABLE or ENABLE REPLICA TRIGGER, SHARE ROW EXCLUSIVE) is
-- not excluded during a batch; the next batch refuses. Nor can janitor see
-- an application session that runs with session_replication_role = replica.
CREATE FUNCTION janitor_task_keys_problem() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    missing text;
BEGIN
    IF to_regclass('face_swap_tasks') IS NULL OR to_regclass('images') IS NULL THEN
        RETURN 'the tables face_swap_tasks and images must both exist';
    END IF;
    -- One query for the four columns: every batch's DELETE runs this.
    SELECT col INTO missing
    FROM unnest(ARRAY['husband_photo_id', 'wife_photo_id', 'template_id', 'result_image_id']) WITH ORDINALITY AS k(col, n)
    WHERE NOT EXISTS (
        SELECT 1
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
        WHERE c.contype = 'f'
          AND c.conrelid = to_regclass('face_swap_tasks')
          AND c.confrelid = to_regclass('images')
          AND cardinality(c.conkey) = 1
          AND a.attname = k.col
          AND r.attname = 'id'
          AND c.confdeltype = 'n'
          -- The key's checks fire in ordinary sessions only when enabled as
          -- 'O' (origin) or 'A' (always): DISABLE TRIGGER makes them 'D',
          -- ENABLE REPLICA TRIGGER 'R', and both switch the checks off.
          AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                          WHERE t.tgconstraint = c.oid AND t.tgenabled NOT IN ('O', 'A'))
    )
    ORDER BY n
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RETURN format('face_swap_tasks.%I has no enabled foreign key to images (id) ON DELETE SET NULL', missing);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION janitor_require_task_keys() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem text := janitor_task_keys_problem();
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'JN001',
            MESSAGE = 'refusing to delete image rows: ' || problem,
            HINT = 'janitor decides that an image is unused from the tasks that reference it, and only the foreign '
                || 'key makes a task inserted meanwhile wait for that decision: ALTER TABLE face_swap_tasks ADD '
                || 'FOREIGN KEY (<column>) REFERENCES images (id) ON DELETE SET NULL';
    END IF;
    RETURN true;
END
$$;
