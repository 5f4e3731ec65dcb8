"""Entry point of the Celery worker and beat: ``celery -A worker worker``."""

from web import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
