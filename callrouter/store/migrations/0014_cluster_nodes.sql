-- Cluster: the nodes on this database with their heartbeats; each call names its node.

CREATE TABLE nodes (
    -- The second key of the node's advisory lock, held while its session lives.
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    -- The database's clock, so that nodes with skewed clocks still agree who is late.
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- NULL: a call from before the cluster (closed by the first node to start).
ALTER TABLE calls ADD COLUMN node text;
CREATE INDEX calls_open_on_node ON calls (node) WHERE state <> 'ended';
