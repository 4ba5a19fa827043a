-- Drop the application's tables only if the up migration created them.
DO $$
BEGIN
    IF to_regclass('face_swap_tasks') IS NOT NULL
       AND obj_description('face_swap_tasks'::regclass, 'pg_class') = 'created by janitor' THEN
        DROP TABLE face_swap_tasks;
    END IF;
    IF to_regclass('images') IS NOT NULL
       AND obj_description('images'::regclass, 'pg_class') = 'created by janitor' THEN
        DROP TABLE images;
    END IF;
END
$$;
