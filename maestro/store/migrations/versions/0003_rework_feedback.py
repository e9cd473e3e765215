"""Rework rounds: the feedback a step gets when a gate or a reviewer sends it back

The round itself is already a column of steps, dispatches and artifacts; this adds the
feedback the next attempt of a reworked step is sent and the attempts made before the
round (attempt numbers go on across rounds; the retry policy counts within one), so
a scheduler that restarts mid-round sends the same feedback.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("feedback", sa.Text(), server_default="", nullable=False))
        batch.add_column(
            sa.Column(
                "attempts_before_round", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("attempts_before_round")
        batch.drop_column("feedback")
