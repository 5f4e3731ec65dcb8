"""Logging in and out."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Length

from models import User

from .db import db_session
from .forms import EmptyForm
from .security import safe_next, verify_password

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("E-mail Address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Remember me")
    submit = SubmitField("Log in")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = (
            db_session()
            .scalars(sa.select(User).where(sa.func.lower(User.email) == email))
            .one_or_none()
        )
        if (
            user is None
            or not user.is_active
            or not verify_password(user.password_hash, form.password.data)
        ):
            flash("Invalid e-mail address or password.", "danger")
        else:
            session.clear()
            login_user(user, remember=form.remember.data)
            # Binds OAuth consent to this browser session (see mailauth.consent).
            session["binding"] = secrets.token_hex(32)
            return redirect(safe_next(request.args.get("next"), url_for("main.dashboard")))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    form = EmptyForm()
    if form.validate_on_submit():
        logout_user()
        session.clear()
        flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
