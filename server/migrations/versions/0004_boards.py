"""kernel leaderboards: removals by staff, students' display names

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('board_removals',
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('board', sa.String(length=100), nullable=False),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('board_removals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_board_removals_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_board_removals_submission_id'), ['submission_id'], unique=False)

    op.create_table('board_names',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('board_names')
    with op.batch_alter_table('board_removals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_board_removals_submission_id'))
        batch_op.drop_index(batch_op.f('ix_board_removals_created_at'))
    op.drop_table('board_removals')
