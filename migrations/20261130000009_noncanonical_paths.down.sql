DROP INDEX IF EXISTS janitor_images_noncanonical_path;
