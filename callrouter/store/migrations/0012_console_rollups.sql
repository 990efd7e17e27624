-- The console on a big account: daily roll-ups of calls and the call log's indexes.

-- Whether the call was its caller's first ever to the client, fixed when the call is written
-- (a later erasure of an earlier call does not make this one first). Withheld numbers: false.
ALTER TABLE calls ADD COLUMN first_call boolean NOT NULL DEFAULT false;
UPDATE calls SET first_call = true
WHERE id IN (SELECT DISTINCT ON (client_id, caller_number) id FROM calls
             WHERE caller_number IS NOT NULL
             ORDER BY client_id, caller_number, started_at, id);

-- Finds a caller's earlier calls (first_call) and a caller number typed in full.
CREATE INDEX calls_client_caller ON calls (client_id, caller_number, started_at)
    WHERE caller_number IS NOT NULL;
-- A caller number searched by its last digits: a prefix of the reversed number.
CREATE INDEX calls_client_caller_reversed ON calls (client_id, reverse(caller_number) text_pattern_ops)
    WHERE caller_number IS NOT NULL;
-- The call log, newest first (ids are UUIDv7: id order is start order), narrowed by one field.
CREATE INDEX calls_client_source ON calls (client_id, (attribution->>'source'), id);
CREATE INDEX calls_client_campaign ON calls (client_id, (attribution->>'campaign'), id);
CREATE INDEX calls_client_disposition ON calls (client_id, disposition, id);
CREATE INDEX calls_client_number ON calls (client_id, number_id, id);

-- Planned for each row with its values: a plan cached while the table was small (a new
-- install) scans every call of the client for each new one, seconds per batch by 100,000 calls.
CREATE FUNCTION mark_first_call() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    -- A BEFORE row trigger sees the rows its statement inserted before this one, so a batch
    -- with two calls of one caller marks only the earlier.
    NEW.first_call := NEW.caller_number IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM calls
        WHERE client_id = NEW.client_id AND caller_number = NEW.caller_number
          AND started_at <= NEW.started_at AND id <> NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER calls_first_call BEFORE INSERT ON calls
    FOR EACH ROW EXECUTE FUNCTION mark_first_call();

-- The calls rows there are now, counted per UTC day of their start and channel. Calls removed
-- by erasure or retention leave these counts (call_aggregates keeps theirs). Kept current by
-- the statement triggers below (one upsert per statement, not per row: the call journal writes
-- in batches); rebuilt for one client by store/call_days.py rebuild().
CREATE TABLE call_days (
    client_id    uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    day          date NOT NULL,
    source       text,
    campaign     text,
    -- NULL while the call is in progress.
    disposition  text,
    calls        bigint NOT NULL DEFAULT 0,
    answered     bigint NOT NULL DEFAULT 0,
    first_time   bigint NOT NULL DEFAULT 0,
    CONSTRAINT call_days_group UNIQUE NULLS NOT DISTINCT
        (client_id, day, source, campaign, disposition)
);

-- Landing pages have too many values to multiply by the other keys: their own roll-up.
CREATE TABLE call_page_days (
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    day           date NOT NULL,
    landing_page  text,
    calls         bigint NOT NULL DEFAULT 0,
    CONSTRAINT call_page_days_group UNIQUE NULLS NOT DISTINCT (client_id, day, landing_page)
);

-- What one calls row adds to (sign 1) or takes from (sign -1) the roll-ups.
CREATE TYPE call_change AS (
    client_id uuid, day date, source text, campaign text, landing_page text, disposition text,
    answered boolean, first_call boolean, sign integer);

CREATE FUNCTION call_change_of(c calls, sign integer) RETURNS call_change
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(c.client_id, (c.started_at AT TIME ZONE 'UTC')::date, c.attribution->>'source',
               c.attribution->>'campaign', c.attribution->>'landing_page', c.disposition,
               c.answered_at IS NOT NULL, c.first_call, sign)::call_change
$$;

-- Groups whose counts do not move (most updates: a call ringing, answered on the same
-- disposition) are not written. A client being deleted (its calls go by cascade) is no longer
-- visible in clients, so nothing is written for it.
CREATE FUNCTION roll_up(changes call_change[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO call_days AS d (client_id, day, source, campaign, disposition, calls,
                                answered, first_time)
    SELECT c.client_id, c.day, c.source, c.campaign, c.disposition, sum(c.sign),
           coalesce(sum(c.sign) FILTER (WHERE c.answered), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.first_call), 0)
    FROM unnest(changes) c JOIN clients k ON k.id = c.client_id
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(c.sign) <> 0 OR sum(c.sign) FILTER (WHERE c.answered) <> 0
        OR sum(c.sign) FILTER (WHERE c.first_call) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT call_days_group DO UPDATE SET
        calls = d.calls + EXCLUDED.calls,
        answered = d.answered + EXCLUDED.answered,
        first_time = d.first_time + EXCLUDED.first_time;
    INSERT INTO call_page_days AS d (client_id, day, landing_page, calls)
    SELECT c.client_id, c.day, c.landing_page, sum(c.sign)
    FROM unnest(changes) c JOIN clients k ON k.id = c.client_id
    GROUP BY 1, 2, 3 HAVING sum(c.sign) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT call_page_days_group DO UPDATE SET calls = d.calls + EXCLUDED.calls;
$$;

-- A trigger with transition tables handles one kind of event: one function serves all three.
CREATE FUNCTION roll_up_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM roll_up(ARRAY(SELECT call_change_of(n, 1) FROM new_rows n));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM roll_up(ARRAY(SELECT call_change_of(n, 1) FROM new_rows n
                              UNION ALL SELECT call_change_of(o, -1) FROM old_rows o));
    ELSE
        PERFORM roll_up(ARRAY(SELECT call_change_of(o, -1) FROM old_rows o));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER calls_rolled_up_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION roll_up_calls();
CREATE TRIGGER calls_rolled_up_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION roll_up_calls();
CREATE TRIGGER calls_rolled_up_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION roll_up_calls();

INSERT INTO call_days (client_id, day, source, campaign, disposition, calls, answered, first_time)
SELECT client_id, (started_at AT TIME ZONE 'UTC')::date, attribution->>'source',
       attribution->>'campaign', disposition, count(*),
       count(*) FILTER (WHERE answered_at IS NOT NULL), count(*) FILTER (WHERE first_call)
FROM calls GROUP BY 1, 2, 3, 4, 5;
INSERT INTO call_page_days (client_id, day, landing_page, calls)
SELECT client_id, (started_at AT TIME ZONE 'UTC')::date, attribution->>'landing_page', count(*)
FROM calls GROUP BY 1, 2, 3;
