"""consent ledger is append-only: the database refuses UPDATE and DELETE

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "consent ledger is append-only"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER consentevent_no_{verb.lower()} BEFORE {verb} ON consentevent "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION consentevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER consentevent_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON consentevent FOR EACH STATEMENT EXECUTE FUNCTION consentevent_append_only()"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS consentevent_no_update")
        op.execute("DROP TRIGGER IF EXISTS consentevent_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS consentevent_append_only ON consentevent")
        op.execute("DROP FUNCTION IF EXISTS consentevent_append_only()")
