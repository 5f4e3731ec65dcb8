"""Forms shared by several views."""

from flask_wtf import FlaskForm


class EmptyForm(FlaskForm):
    """Carries only the CSRF token, for POST-only buttons such as Log out."""
