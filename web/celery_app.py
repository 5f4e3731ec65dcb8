"""Celery bound to Flask: every task runs inside the app context."""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

import celery_config
from runtime import Services


def celery_init_app(app: Flask, services: Services) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(celery_config)
    celery.conf.broker_url = services.settings.redis_url
    celery.conf.beat_schedule = celery_config.beat_schedule(services.settings.beat_tick_seconds)
    celery.set_default()
    for module in ("connectors", "outbox", "tokens"):
        celery.autodiscover_tasks(["tasks"], related_name=module, force=True)

    def _dispose_pool(**_kwargs: object) -> None:
        # Connections inherited across fork are shared with the parent.
        services.db.dispose()

    worker_process_init.connect(_dispose_pool, weak=False)
    app.extensions["celery"] = celery
    return celery
