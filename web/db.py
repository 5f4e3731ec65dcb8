"""A request-scoped database session for views."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session


def db_session() -> Session:
    """Return this request's session; it is closed when the request ends."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["mailroom"].db.sessionmaker()
    session: Session = g.db_session
    return session


def close_db_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
