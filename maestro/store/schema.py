"""The relational schema (portable SQL: the same tables will serve PostgreSQL)."""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    requirement   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    state         TEXT NOT NULL,
    error         TEXT NOT NULL DEFAULT '',
    create_time   TEXT NOT NULL,
    start_time    TEXT,
    end_time      TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_request_id ON runs (request_id) WHERE request_id <> '';
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (create_time DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);

CREATE TABLE IF NOT EXISTS steps (
    run_id        TEXT NOT NULL REFERENCES runs (run_id),
    step_id       TEXT NOT NULL,
    position      INTEGER NOT NULL,
    persona       TEXT NOT NULL,
    depends_on    TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    summary       TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT '',
    model         TEXT NOT NULL DEFAULT '',
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    start_time    TEXT,
    end_time      TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE IF NOT EXISTS attempts (
    run_id         TEXT NOT NULL,
    step_id        TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    state          TEXT NOT NULL,
    start_time     TEXT NOT NULL,
    heartbeat_time TEXT NOT NULL,
    end_time       TEXT,
    error          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, step_id, attempt),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id)
);

CREATE TABLE IF NOT EXISTS events (
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    sequence   INTEGER NOT NULL,
    type       TEXT NOT NULL,
    step_id    TEXT NOT NULL DEFAULT '',
    time       TEXT NOT NULL,
    message    TEXT NOT NULL,
    attributes TEXT NOT NULL,
    PRIMARY KEY (run_id, sequence)
);

CREATE TABLE IF NOT EXISTS artifacts (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    path        TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    content     BLOB NOT NULL,
    create_time TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);

CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""
