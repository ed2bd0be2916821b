"""checkout lifetime, the pending page's gateway check, the test gateway's memory

Revision ID: 0003_checkout_lifetime
Revises: 0002_scheduled_plan_change

"""
from alembic import op
import sqlalchemy as sa

revision = '0003_checkout_lifetime'
down_revision = '0002_scheduled_plan_change'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checkout_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('gateway_checked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('gateway_said', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('returned_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('test_gateway_payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gateway_order_id', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('payment_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_test_gateway_payments')),
    sa.UniqueConstraint('gateway_order_id', name=op.f('uq_test_gateway_payments_gateway_order_id'))
    )


def downgrade():
    op.drop_table('test_gateway_payments')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('returned_at')
        batch_op.drop_column('gateway_said')
        batch_op.drop_column('gateway_checked_at')
        batch_op.drop_column('checkout_expires_at')
