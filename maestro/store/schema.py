"""The relational schema, defined once (SQLAlchemy Core) for SQLite and PostgreSQL.

Alembic's migrations (maestro/store/migrations/) create exactly these tables; a test
compares a migrated database with this metadata on both backends. The services never
import this module: the hot path speaks plain SQL (maestro/store/sql_*.py), and only
migrations and tests need SQLAlchemy.

Conventions that keep one SQL text portable across both databases:
- times are whole microseconds since the epoch (BIGINT): exact, so a page cursor
  compares equal to the row it came from, and comparisons and arithmetic need no
  dialect functions;
- flags are small integers, JSON is text, file contents are binary;
- a run's event sequence is allocated from `runs.last_sequence` while the run's row is
  locked by the writing transaction, so sequences stay dense under several writers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)

from maestro.store.schema_revision import SCHEMA_REVISION

__all__ = ["SCHEMA_REVISION", "metadata"]

metadata = MetaData()

# The schedulers that are (or were) alive; a write to its row is a scheduler's
# readiness check, and operators can see who drives what.
schedulers = Table(
    "schedulers",
    metadata,
    Column("scheduler_id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("heartbeat_time", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("workflow_name", Text, nullable=False),
    Column("requirement", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("created_by", Text, nullable=False, server_default=""),
    Column("state", Text, nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("start_time", BigInteger),
    Column("end_time", BigInteger),
    # Ownership: the scheduler driving the run, until lease_expires; every write it
    # makes for the run carries lease_token (fencing), which a takeover increments.
    Column("owner", Text),
    Column("lease_token", Integer, nullable=False, server_default=text("0")),
    Column("lease_expires", BigInteger),
    Column("cancel_requested", SmallInteger, nullable=False, server_default=text("0")),
    Column("last_sequence", Integer, nullable=False, server_default=text("0")),
)
Index(
    "runs_request_id",
    runs.c.request_id,
    unique=True,
    postgresql_where=text("request_id <> ''"),
    sqlite_where=text("request_id <> ''"),
)
Index("runs_by_time", runs.c.create_time.desc(), runs.c.run_id.desc())
Index("runs_by_state", runs.c.state)
Index("runs_by_owner", runs.c.owner)

# A run's workflow, apart from its `runs` row: every write for a run updates that row
# (its last event, its lease), and SQLite rewrites a row whole, reading and comparing
# every overflow page. With a 1,000-step workflow (314 KB) in it, each update took about
# 135 us; without it, 1-9 us.
run_specs = Table(
    "run_specs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("spec_json", Text, nullable=False),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("persona", Text, nullable=False),
    Column("kind", Text, nullable=False, server_default="persona"),
    Column("depends_on", Text, nullable=False),
    Column("state", Text, nullable=False),
    # Attempts of the work (model errors, bad output, attempt timeouts). A platform
    # fault re-dispatches the same attempt, so this number does not grow.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error", Text, nullable=False, server_default=""),
    Column("summary", Text, nullable=False, server_default=""),
    Column("provider", Text, nullable=False, server_default=""),
    Column("model", Text, nullable=False, server_default=""),
    # A typed result beyond files and summary (a gate's metrics, a review's verdict).
    Column("result_json", Text, nullable=False, server_default=""),
    # Rework rounds: 0 first, then one more each time a gate or reviewer sends it back.
    Column("round", Integer, nullable=False, server_default=text("0")),
    # What the step's next attempt is told in a rework round (the gate's report, the
    # reviewer's findings, its previous summary); empty outside rework.
    Column("feedback", Text, nullable=False, server_default=""),
    # Attempts made in earlier rounds: attempt numbers go on across rounds (they key the
    # dispatches), while the retry policy counts the attempts of the current round.
    Column("attempts_before_round", Integer, nullable=False, server_default=text("0")),
    # Usage of every dispatch of the step, failed and lost ones included.
    *(
        Column(name, Integer, nullable=False, server_default=text("0"))
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    ),
    Column("cost_usd", Double, nullable=False, server_default=text("0")),
    Column("start_time", BigInteger),
    Column("end_time", BigInteger),
    # A durable timer: a PENDING step is not dispatched before due_time (a retry's
    # backoff); a waiting step times out at due_time.
    Column("due_time", BigInteger),
    PrimaryKeyConstraint("run_id", "step_id"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)

# One row per dispatch of an attempt to a worker. Usage is what the worker reported,
# kept up to date while it runs, so a lost dispatch still counts what it spent.
dispatches = Table(
    "dispatches",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("dispatch", Integer, nullable=False),
    Column("round", Integer, nullable=False, server_default=text("0")),
    Column("state", Text, nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("error", Text, nullable=False, server_default=""),
    Column("provider", Text, nullable=False, server_default=""),
    Column("model", Text, nullable=False, server_default=""),
    Column("input_tokens", Integer, nullable=False, server_default=text("0")),
    Column("output_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cache_read_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cache_write_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Double, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("run_id", "step_id", "attempt", "dispatch"),
    ForeignKeyConstraint(
        ["run_id", "step_id"], ["steps.run_id", "steps.step_id"], ondelete="CASCADE"
    ),
)

events = Table(
    "events",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("step_id", Text, nullable=False, server_default=""),
    Column("time", BigInteger, nullable=False),
    Column("message", Text, nullable=False),
    Column("attributes", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "sequence"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)

# Every write of a path is a version; `latest` marks the one reads and downloads give.
artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("latest", SmallInteger, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("round", Integer, nullable=False, server_default=text("0")),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "path", "version"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)
Index("artifacts_latest", artifacts.c.run_id, artifacts.c.latest, artifacts.c.path)
Index("artifacts_by_step", artifacts.c.run_id, artifacts.c.step_id)

# A person's decision on an approval step (one per step and round; request_id makes a
# retried decision idempotent).
decisions = Table(
    "decisions",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("round", Integer, nullable=False),
    Column("decision", Text, nullable=False),
    Column("comment", Text, nullable=False, server_default=""),
    Column("decided_by", Text, nullable=False, server_default=""),
    Column("request_id", Text, nullable=False, server_default=""),
    Column("time", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "step_id", "round"),
    ForeignKeyConstraint(
        ["run_id", "step_id"], ["steps.run_id", "steps.step_id"], ondelete="CASCADE"
    ),
)

# Model capacity shared by every scheduler (scheduler/shared_ledger.py): one row per
# model, locked while a scheduler leases capacity, holding a 429's pause for everyone.
capacity_models = Table(
    "capacity_models",
    metadata,
    Column("model", Text, primary_key=True),
    Column("paused_until", BigInteger, nullable=False, server_default=text("0")),
)

# Capacity granted within the rate limits' window: a lease counts against every
# window that overlaps [granted_time, until_time + window].
capacity_grants = Table(
    "capacity_grants",
    metadata,
    # INTEGER on SQLite: only that type makes a primary key the rowid (numbered by it).
    Column(
        "grant_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("model", Text, nullable=False),
    Column("granted_time", BigInteger, nullable=False),
    Column("until_time", BigInteger, nullable=False),
    Column("requests", Double, nullable=False),
    Column("input_tokens", Double, nullable=False),
    Column("output_tokens", Double, nullable=False),
)
Index("capacity_grants_by_model", capacity_grants.c.model, capacity_grants.c.until_time)
