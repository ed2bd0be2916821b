"""subscriptions.scheduled_meal_plan_id: a plan change the gateway applies at cycle end

Revision ID: 0002_scheduled_plan_change
Revises: 0001

"""
from alembic import op
import sqlalchemy as sa

revision = '0002_scheduled_plan_change'
down_revision = '0001'
branch_labels = None
depends_on = None

FK_NAME = 'fk_subscriptions_scheduled_meal_plan_id_meal_plans'


def upgrade():
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite cannot ALTER a constraint in, but accepts the reference inline
        # (rebuilding the table in batch mode would drop its partial unique index).
        op.execute('ALTER TABLE subscriptions ADD COLUMN scheduled_meal_plan_id INTEGER '
                   f'CONSTRAINT {FK_NAME} REFERENCES meal_plans (id)')
        return
    op.add_column('subscriptions', sa.Column('scheduled_meal_plan_id', sa.Integer(), nullable=True))
    op.create_foreign_key(FK_NAME, 'subscriptions', 'meal_plans', ['scheduled_meal_plan_id'], ['id'])


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE subscriptions DROP COLUMN scheduled_meal_plan_id')
        return
    op.drop_constraint(FK_NAME, 'subscriptions', type_='foreignkey')
    op.drop_column('subscriptions', 'scheduled_meal_plan_id')
