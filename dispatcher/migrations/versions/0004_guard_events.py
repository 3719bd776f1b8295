"""guard events: the reputation guard's decisions and the operator's acknowledgements per run

Revision ID: 0004_guard_events
Revises: 0003_webhooks
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = "0004_guard_events"
down_revision = "0003_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("guardevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guardevent_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("guardevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guardevent_run_id"))
    op.drop_table("guardevent")
