"""operator role and the console's indexes

Revision ID: 0004_operator_role
Revises: 0003_checkout_lifetime

"""
from alembic import op
import sqlalchemy as sa

revision = '0004_operator_role'
down_revision = '0003_checkout_lifetime'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), server_default='shopper',
                                      nullable=False))
        batch_op.create_check_constraint('role_known', "role IN ('shopper', 'operator')")
    # Prefix searches (LIKE 'asha%'): on PostgreSQL the pattern operator class lets a btree
    # serve LIKE under any collation (the default one only under "C").
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE INDEX ix_users_name_lower ON users (lower(name) text_pattern_ops)')
    else:
        op.create_index('ix_users_name_lower', 'users', [sa.text('lower(name)')], unique=False)
    op.create_index('ix_users_email_pattern', 'users', ['email'], unique=False,
                    postgresql_ops={'email': 'text_pattern_ops'})
    op.create_index('ix_orders_paid_at', 'orders', ['paid_at'], unique=False)
    op.create_index('ix_orders_gateway_customer', 'orders', ['gateway_customer_id'], unique=False)
    op.create_index('ix_webhook_events_received', 'webhook_events', ['received_at'], unique=False)
    op.create_index('ix_webhook_delivery_attempts_started', 'webhook_delivery_attempts',
                    ['started_at'], unique=False)


def downgrade():
    op.drop_index('ix_webhook_delivery_attempts_started', table_name='webhook_delivery_attempts')
    op.drop_index('ix_webhook_events_received', table_name='webhook_events')
    op.drop_index('ix_orders_gateway_customer', table_name='orders')
    op.drop_index('ix_orders_paid_at', table_name='orders')
    op.drop_index('ix_users_email_pattern', table_name='users')
    op.drop_index('ix_users_name_lower', table_name='users')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('role_known', type_='check')
        batch_op.drop_column('role')
