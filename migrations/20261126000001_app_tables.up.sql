-- The application's own tables, as the worker expects them.
--
-- The face-swap application normally creates these itself. When its copies
-- already exist we leave them exactly as they are; when they don't (a fresh
-- database, the tests) we create them and mark them with a table comment, so
-- that the down migration drops only what this migration created.
DO $$
BEGIN
    IF to_regclass('images') IS NULL THEN
        CREATE TABLE images (
            id           bigserial PRIMARY KEY,
            filename     text        NOT NULL,
            storage_path text        NOT NULL UNIQUE,
            category     text        NOT NULL,
            storage_type text        NOT NULL,
            session_id   text,
            file_size    bigint      NOT NULL DEFAULT 0,
            expires_at   timestamptz,
            created_at   timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE images IS 'created by janitor';
    END IF;

    IF to_regclass('face_swap_tasks') IS NULL THEN
        CREATE TABLE face_swap_tasks (
            id               bigserial PRIMARY KEY,
            husband_photo_id bigint REFERENCES images (id) ON DELETE SET NULL,
            wife_photo_id    bigint REFERENCES images (id) ON DELETE SET NULL,
            template_id      bigint REFERENCES images (id) ON DELETE SET NULL,
            result_image_id  bigint REFERENCES images (id) ON DELETE SET NULL,
            status           text        NOT NULL,
            batch_id         text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            completed_at     timestamptz
        );
        COMMENT ON TABLE face_swap_tasks IS 'created by janitor';
    END IF;
END
$$;
