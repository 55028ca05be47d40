"""`dlopt serve`, `dlopt worker` and `dlopt token`: the server's commands, registered with
the engine's CLI through the `dlopt.commands` entry point (the engine never imports us)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the course server (settings from DLOPT_* variables)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=None, help="embedded grading threads (default: DLOPT_WORKERS or 2)")
    s.set_defaults(fn=serve)

    w = sub.add_parser("worker", help="a Celery grading worker (needs DLOPT_BROKER_URL)")
    w.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    w.add_argument("--concurrency", type=int, default=1, help="submissions graded at once")
    w.add_argument("--gpu-slots", default=None,
                   help="(docker runner) CUDA devices for this worker, e.g. 0,1; one submission per GPU")
    w.set_defaults(fn=worker)

    t = sub.add_parser("token", help="(staff, on the server) issue a new API token for a user (revokes their "
                                     "old ones and signs them out)")
    t.add_argument("login")
    t.add_argument("--data-dir", default=None, help="the server's data folder (default: DLOPT_DATA_DIR, as for serve)")
    t.set_defaults(fn=token)

    r = sub.add_parser("roster", help="(staff, on the server) import a roster CSV: login, name, email, role; "
                                      "prints the new tokens as CSV")
    r.add_argument("csv")
    r.add_argument("--reissue", action="store_true", help="new tokens for everyone listed (old ones revoked)")
    r.add_argument("--data-dir", default=None, help="as for token")
    r.set_defaults(fn=roster)

    m = sub.add_parser("similarity", help="(staff, on the server) pairwise similarity of an assignment's final "
                                          "submissions (copydetect; the released notebook as boilerplate): saved "
                                          "for the staff page, the top pairs printed")
    m.add_argument("slug")
    m.add_argument("--top", type=int, default=200, help="pairs kept in the report (default 200)")
    m.add_argument("--show", type=int, default=20, help="pairs printed (default 20)")
    m.add_argument("--data-dir", default=None, help="as for token")
    m.set_defaults(fn=similarity)


def serve(args) -> int:
    import uvicorn

    from server.app import create_app
    from server.config import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {"workers": args.workers} if args.workers is not None else {}
    settings = Settings(**overrides)
    app = create_app(settings)
    print(f"dlopt server on http://{args.host}:{args.port}  (database {settings.database.split('://')[0]}, "
          f"{'broker ' + settings.broker_url if settings.broker_url else f'{settings.workers} embedded workers'}; "
          f"admin token in {settings.data_dir / 'admin-token'} when it was created)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def worker(args) -> int:
    from server.celery_app import app, settings

    if not settings().broker_url:
        print("dlopt worker needs a broker: set DLOPT_BROKER_URL=redis://host:6379/0", file=sys.stderr)
        return 2
    if args.gpu_slots:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu_slots
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app.worker_main(["worker", "--queues", args.queues, "--concurrency", str(args.concurrency),
                     "--pool", "threads", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                     "--hostname", f"dlopt-{os.getpid()}@%h"])
    return 0


def _server_database(args):
    """The database `dlopt serve` uses (same settings: DLOPT_* variables, .env, or
    --data-dir); None, with the reason printed, where there is none: a staff command never
    creates an empty one (it would hold nobody)."""
    from server.config import Settings
    from server.db import Database

    s = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    if s.database_url is None and not (s.data_dir / "dlopt.sqlite3").exists():
        print(f"no server data in {s.data_dir.resolve()}: run this where `dlopt serve` runs, or point it at the "
              "server's data with --data-dir or DLOPT_DATA_DIR (or DLOPT_DATABASE_URL)", file=sys.stderr)
        return None
    db = Database(s.database)
    db.migrate()
    return db


def roster(args) -> int:
    import csv as csvlib
    from pathlib import Path

    from fastapi import HTTPException
    from sqlalchemy import select

    from server.models import User
    from server.service import import_roster

    db = _server_database(args)
    if db is None:
        return 2
    text = Path(args.csv).read_text(encoding="utf-8-sig")
    with db.session() as session:
        admin = session.scalar(select(User).where(User.role == "admin").order_by(User.id))
        try:
            out = import_roster(session, admin, text, reissue=args.reissue)
        except HTTPException as e:
            print(f"refused: {e.detail}", file=sys.stderr)
            return 2
    print(f"created {len(out.created)}, updated {len(out.updated)}", file=sys.stderr)
    w = csvlib.writer(sys.stdout)
    w.writerow(["login", "token"])
    for login, tok in sorted(out.tokens.items()):
        w.writerow([login, tok])
    return 0


def token(args) -> int:
    from sqlalchemy import select

    from server import auth
    from server.db import begin_write
    from server.models import User

    db = _server_database(args)
    if db is None:
        return 2
    with db.session() as session:
        begin_write(session)
        user = session.scalar(select(User).where(User.login == args.login))
        if user is None:
            print(f"no user {args.login!r}", file=sys.stderr)
            return 2
        auth.revoke_tokens(session, user)
        t = auth.issue_token(session, user)
        session.commit()
    print(t)
    return 0


def similarity(args) -> int:
    from server.similarity import command

    db = _server_database(args)
    return 2 if db is None else command(args, db)
