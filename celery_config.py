"""Celery settings. The broker URL and the beat interval come from Settings."""

# A run is safe to repeat (the ledger prevents a second job), so acknowledge
# only after the task ends: a worker killed mid-run gets its task redelivered.
task_acks_late = True
task_reject_on_worker_lost = True
# One task at a time per process: runs are long and uneven, prefetching
# would park due connectors behind a slow one.
worker_prefetch_multiplier = 1
task_serializer = "json"
accept_content = ["json"]
result_backend = None
task_ignore_result = True
broker_connection_retry_on_startup = True
# Redis redelivers an unacknowledged task after this many seconds; it must
# exceed the longest task (the scan's hard time limit is 30 minutes).
broker_transport_options = {"visibility_timeout": 3600}
worker_hijack_root_logger = False
worker_send_task_events = True
task_send_sent_event = True
timezone = "UTC"

BEAT_TICK_TASK = "mailroom.connectors.enqueue_due"
OUTBOX_TASK = "mailroom.outbox.dispatch"
TOKEN_HEALTH_TASK = "mailroom.tokens.check_health"


def beat_schedule(tick_seconds: float) -> dict[str, dict[str, object]]:
    """Beat ticks often and lets the database say what is due."""
    # A tick that waited longer than the next one is worthless.
    expires = {"expires": max(tick_seconds, 1.0)}
    return {
        "enqueue-due-connectors": {
            "task": BEAT_TICK_TASK,
            "schedule": tick_seconds,
            "options": expires,
        },
        "dispatch-outbox": {"task": OUTBOX_TASK, "schedule": tick_seconds, "options": expires},
        "check-token-health": {
            "task": TOKEN_HEALTH_TASK,
            "schedule": 15 * 60.0,
            "options": {"expires": 15 * 60.0},
        },
    }
