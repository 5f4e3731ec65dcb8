"""Celery settings. The broker URL and the beat interval come from Settings."""

from kombu import Exchange, Queue

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
OUTBOX_SEND_TASK = "mailroom.outbox.send"
TOKEN_HEALTH_TASK = "mailroom.tokens.check_health"

# Connector runs take up to 30 minutes, while beat's ticks expire after one
# tick interval. On one queue the ticks wait behind the runs and expire, so the
# short tasks get a queue of their own and a worker that serves only it.
SCANS_QUEUE = "scans"
CONTROL_QUEUE = "control"
# NOTE: the sends share the queue with the ticks, so a burst of notifications
# delays the ticks queued behind it until the control worker has sent them.
CONTROL_TASKS = (BEAT_TICK_TASK, OUTBOX_TASK, OUTBOX_SEND_TASK, TOKEN_HEALTH_TASK)
# Two processes, so one slow SMTP conversation does not hold back the ticks.
CONTROL_CONCURRENCY = 2

task_default_queue = SCANS_QUEUE
# A worker started without -Q consumes every queue listed here. Each queue
# names its own exchange and routing key, because without them both queues
# get Celery's default binding and one message reaches both.
task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in (SCANS_QUEUE, CONTROL_QUEUE)
)
task_routes = {name: {"queue": CONTROL_QUEUE} for name in CONTROL_TASKS}


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
