-- The call log narrowed by source and outcome together, newest first. With only the one-field
-- indexes a combination that matches nothing else (bing + busy + recorded: busy calls have no
-- recording) read every call of the source; this index reads only that source's calls with
-- that outcome. It costs one more index entry on each new call.
CREATE INDEX calls_client_source_disposition
    ON calls (client_id, (attribution->>'source'), disposition, id);
