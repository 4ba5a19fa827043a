DROP INDEX IF EXISTS janitor_images_storage_path;
