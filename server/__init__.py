"""The course server: submissions, scores, roles, a durable grading queue, web pages.

It imports the grading engine (`autograder`); the engine never imports it. Layout, one
layer per concern: `config` (settings from the environment), `db` and `models` (SQLAlchemy,
migrated by Alembic in `migrations/`), `storage` (uploaded files by content hash), `auth`
(hashed API tokens, roles), `policy` (deadlines, late penalties, limits, final scores),
`queue` (grading runs: claim, lease, record once; the embedded pool), `celery_app` (the
broker path), `routes/` (the versioned JSON API), `pages` (server-rendered web pages).
"""
