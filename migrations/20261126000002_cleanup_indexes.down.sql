DROP INDEX IF EXISTS janitor_tasks_finished_results;
DROP INDEX IF EXISTS janitor_tasks_result_image;
DROP INDEX IF EXISTS janitor_tasks_template;
DROP INDEX IF EXISTS janitor_tasks_wife_photo;
DROP INDEX IF EXISTS janitor_tasks_husband_photo;
DROP INDEX IF EXISTS janitor_images_session;
DROP INDEX IF EXISTS janitor_images_temporary_expiry;
