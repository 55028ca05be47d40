"""staff decisions: extensions, overrides, flag reviews, feedback releases; users.lms_id

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('extensions',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('deadline', sa.DateTime(), nullable=True),
    sa.Column('late_days', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('extensions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_extensions_assignment_id'), ['assignment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_extensions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_extensions_user_id'), ['user_id'], unique=False)

    op.create_table('feedback_releases',
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('released', sa.Boolean(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('feedback_releases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_releases_assignment_id'), ['assignment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_releases_created_at'), ['created_at'], unique=False)

    op.create_table('flag_reviews',
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('function', sa.String(length=200), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('flag_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flag_reviews_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_flag_reviews_submission_id'), ['submission_id'], unique=False)

    op.create_table('overrides',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('function', sa.String(length=200), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'], ),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_overrides_assignment_id'), ['assignment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_overrides_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_overrides_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column("lms_id", sa.String(length=64), nullable=False, server_default=""))

    with op.batch_alter_table('grading_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column("flag_count", sa.Integer(), nullable=False, server_default="0"))
    # runs graded before this migration: their flags counted from their results, so the
    # review queue (which reads flag_count) holds them too
    runs = sa.table("grading_runs", sa.column("id", sa.Integer()), sa.column("status", sa.String()),
                    sa.column("result", sa.JSON()), sa.column("flag_count", sa.Integer()))
    bind = op.get_bind()
    for run_id, result in bind.execute(sa.select(runs.c.id, runs.c.result).where(runs.c.status == "done")).all():
        flags = (result or {}).get("flags") if isinstance(result, dict) else None
        if flags:
            bind.execute(sa.update(runs).where(runs.c.id == run_id).values(flag_count=len(flags)))



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('lms_id')

    with op.batch_alter_table('grading_runs', schema=None) as batch_op:
        batch_op.drop_column('flag_count')

    with op.batch_alter_table('overrides', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_overrides_user_id'))
        batch_op.drop_index(batch_op.f('ix_overrides_created_at'))
        batch_op.drop_index(batch_op.f('ix_overrides_assignment_id'))

    op.drop_table('overrides')
    with op.batch_alter_table('flag_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flag_reviews_submission_id'))
        batch_op.drop_index(batch_op.f('ix_flag_reviews_created_at'))

    op.drop_table('flag_reviews')
    with op.batch_alter_table('feedback_releases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_releases_created_at'))
        batch_op.drop_index(batch_op.f('ix_feedback_releases_assignment_id'))

    op.drop_table('feedback_releases')
    with op.batch_alter_table('extensions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_extensions_user_id'))
        batch_op.drop_index(batch_op.f('ix_extensions_created_at'))
        batch_op.drop_index(batch_op.f('ix_extensions_assignment_id'))

    op.drop_table('extensions')
