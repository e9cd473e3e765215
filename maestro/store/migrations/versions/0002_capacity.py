"""Model capacity shared by schedulers: capacity_models, capacity_grants

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capacity_models",
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("paused_until", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("model"),
    )
    op.create_table(
        "capacity_grants",
        sa.Column(
            "grant_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("granted_time", sa.BigInteger(), nullable=False),
        sa.Column("until_time", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Double(), nullable=False),
        sa.Column("input_tokens", sa.Double(), nullable=False),
        sa.Column("output_tokens", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    with op.batch_alter_table("capacity_grants", schema=None) as batch_op:
        batch_op.create_index("capacity_grants_by_model", ["model", "until_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("capacity_grants", schema=None) as batch_op:
        batch_op.drop_index("capacity_grants_by_model")
    op.drop_table("capacity_grants")
    op.drop_table("capacity_models")
