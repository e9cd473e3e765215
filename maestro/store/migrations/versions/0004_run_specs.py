"""Runs' workflows in a table of their own

Every write for a run updates its `runs` row (its last event, its lease), and SQLite
rewrites a row whole, reading and comparing every overflow page: with a 1,000-step
workflow (314 KB) in the row, each update took about 135 us, and 1-9 us without it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_specs",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.execute("INSERT INTO run_specs (run_id, spec_json) SELECT run_id, spec_json FROM runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("spec_json")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("spec_json", sa.Text(), server_default="", nullable=False))
    op.execute(
        "UPDATE runs SET spec_json ="
        " (SELECT spec_json FROM run_specs WHERE run_specs.run_id = runs.run_id)"
    )
    op.drop_table("run_specs")
