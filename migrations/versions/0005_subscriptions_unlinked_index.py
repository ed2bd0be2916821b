"""partial index for live subscriptions without the gateway's subscription id

Revision ID: 0005_unlinked
Revises: 0004_operator_role

"""
from alembic import op
import sqlalchemy as sa

revision = '0005_unlinked'
down_revision = '0004_operator_role'
branch_labels = None
depends_on = None

UNLINKED = ("gateway_subscription_id IS NULL AND status IN ('active', 'trialing', 'past_due')")


def upgrade():
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('ix_subscriptions_unlinked', ['id'], unique=False,
                              sqlite_where=sa.text(UNLINKED), postgresql_where=sa.text(UNLINKED))


def downgrade():
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index('ix_subscriptions_unlinked', sqlite_where=sa.text(UNLINKED),
                            postgresql_where=sa.text(UNLINKED))
