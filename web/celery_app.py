"""Celery bound to Flask: every task runs inside the app context."""

from __future__ import annotations

import time

from celery import Celery, Task
from celery.signals import before_task_publish, task_postrun, worker_process_init
from flask import Flask

import celery_config
from logconfig import quiet_routine_tasks
from runtime import Services
from tasks.connectors import BEAT_TICK_KEY, WORKER_DONE_KEY


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
    if not services.settings.log_routine_tasks:
        quiet_routine_tasks((celery_config.BEAT_TICK_TASK, celery_config.OUTBOX_TASK))
    for module in ("connectors", "outbox", "tokens"):
        celery.autodiscover_tasks(["tasks"], related_name=module, force=True)

    def _dispose_pool(**_kwargs: object) -> None:
        # Connections inherited across fork are shared with the parent.
        services.db.dispose()

    worker_process_init.connect(_dispose_pool, weak=False)

    def _worker_heartbeat(**_kwargs: object) -> None:
        services.redis.set(WORKER_DONE_KEY, str(time.time()))

    def _beat_heartbeat(sender: object = None, **_kwargs: object) -> None:
        # Runs in the process that publishes the tick, which is beat; so the
        # key shows beat is alive even when every worker is busy.
        if sender == celery_config.BEAT_TICK_TASK:
            services.redis.set(BEAT_TICK_KEY, str(time.time()))

    task_postrun.connect(_worker_heartbeat, weak=False)
    before_task_publish.connect(_beat_heartbeat, weak=False)
    app.extensions["celery"] = celery
    return celery
