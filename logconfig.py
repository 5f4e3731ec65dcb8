"""Process-wide logging: readable lines in development, JSON lines in production.

Connector, run and Celery task ids live in context variables that the
formatter adds to every record, so a worker's lines can be followed per run.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

connector_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "connector_id", default=None
)
run_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.connector_id = connector_id_var.get()
        record.run_id = run_id_var.get()
        record.task_id = task_id_var.get()
        return True


class RoutineTaskFilter(logging.Filter):
    """A filter for Celery's received, succeeded and sending lines of tasks run every tick.

    Beat's tick and the outbox dispatch run every second or so. Their lines
    would bury everything else in the log; their warnings and errors stay.
    """

    def __init__(self, task_names: tuple[str, ...]) -> None:
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(name in message for name in self.task_names)


# The loggers on which Celery reports each task received, finished and sent.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


def quiet_routine_tasks(task_names: tuple[str, ...]) -> None:
    """Leave the routine lines of ``task_names`` out of the worker and beat logs."""
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        for existing in list(logger.filters):
            if isinstance(existing, RoutineTaskFilter):
                logger.removeFilter(existing)
        logger.addFilter(RoutineTaskFilter(task_names))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={value}"
            for name in ("connector_id", "run_id", "task_id")
            if (value := getattr(record, name, None)) is not None
        )
        line = super().format(record)
        return f"{line} [{ids}]" if ids else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("connector_id", "run_id", "task_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Install one stderr handler on the root logger; safe to call twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mailroom", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._mailroom = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
