-- How the orphan sweep and the row operations tell which file a stored path
-- means, whatever form the application wrote it in.
--
-- `janitor_path_key(storage_path)` is the canonical key of a stored path:
-- Unicode NFC, with empty and `.` components dropped (so `/photos/a.jpg`,
-- `./photos/a.jpg`, `photos//a.jpg` and the NFD spelling of a name all mean
-- the file `photos/a.jpg`). It is NULL for a path that cannot be normalised
-- without guessing: one with a `..` component, a backslash or a control
-- character, or one that names a category folder somewhere other than at its
-- start (`/srv/storage/photos/a.jpg`, `https://cdn/photos/a.jpg`): the sweep
-- refuses to run while such rows exist. A path that names no category folder
-- at all (`external/a.jpg`) keeps itself as its key; it refers to nothing
-- janitor sweeps. The key only ever protects files: two spellings of one file
-- share a key, so a file that any row refers to is never an orphan, and a
-- row operation never unlinks a file that another remaining row refers to.
--
-- The fast path returns the path itself when it is already canonical (the
-- usual case: about 5 µs a call here); the rest is done by components.
CREATE FUNCTION janitor_path_key_slow(path text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN path ~ '[[:cntrl:]\\]' OR '..' = ANY (parts) THEN NULL
        WHEN parts[1] IN ('photos', 'templates', 'preprocessed', 'results') THEN array_to_string(parts, '/')
        WHEN parts && ARRAY['photos', 'templates', 'preprocessed', 'results'] THEN NULL
        ELSE array_to_string(parts, '/')
    END
    FROM (SELECT array_remove(array_remove(string_to_array(normalize(path, NFC), '/'), ''), '.') AS parts) AS split
$$;

CREATE FUNCTION janitor_path_key(path text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF path ~ '^(photos|templates|preprocessed|results)(/[^/[:cntrl:]\\]+)+$'
       AND path !~ '/\.\.?(/|$)' AND path IS NFC NORMALIZED THEN
        RETURN path;
    END IF;
    RETURN janitor_path_key_slow(path);
END
$$;
