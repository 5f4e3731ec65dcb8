"""JSON endpoints for the pages' scripts: client search and a client's budget codes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify, request
from flask_login import current_user
from werkzeug.wrappers import Response

from models import BudgetCode, Client

from .db import db_session

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_CLIENT_RESULTS = 20
MAX_QUERY_LENGTH = 200


def api_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Return 401 with JSON instead of redirecting a script to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return jsonify(error="Not logged in; log in to Mailroom and try again."), 401
        return view(*args, **kwargs)

    return wrapped


def search_client_names(text: str, limit: int = MAX_CLIENT_RESULTS) -> list[dict[str, Any]]:
    """Return clients whose name contains ``text``, names that start with it first.

    NOTE: SQLite's lower() folds only ASCII letters, so on SQLite "ä" does not
    match "Ä". PostgreSQL folds letters by the database's locale.
    """
    needle = text.strip()[:MAX_QUERY_LENGTH].lower()
    name = sa.func.lower(Client.name)
    statement = sa.select(Client.id, Client.name).limit(limit)
    if needle:
        statement = statement.where(name.contains(needle, autoescape=True)).order_by(
            sa.case((name.startswith(needle, autoescape=True), 0), else_=1), Client.name
        )
    else:
        statement = statement.order_by(Client.name)
    rows = db_session().execute(statement)
    return [{"id": client_id, "name": client_name} for client_id, client_name in rows]


@bp.get("/clients")
@api_login_required
def clients() -> Response:
    return jsonify(search_client_names(request.args.get("q", "")))


@bp.get("/clients/<int:client_id>/budget-codes")
@api_login_required
def budget_codes(client_id: int) -> Response | tuple[Response, int]:
    session = db_session()
    if session.get(Client, client_id) is None:
        return jsonify(error=f"Client {client_id} does not exist."), 404
    codes = session.scalars(
        sa.select(BudgetCode.code)
        .where(BudgetCode.client_id == client_id)
        .order_by(BudgetCode.code)
    ).all()
    return jsonify(list(codes))
