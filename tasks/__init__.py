"""Celery tasks. They take ids, call domain code, and stay thin."""
