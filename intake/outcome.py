"""What one run found and did, collected while it runs and saved at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

from models import RunStatus

from .jobs import PreparedMessage


@dataclass
class RunOutcome:
    run_id: int
    status: RunStatus
    messages_seen: int = 0
    jobs_created: int = 0
    messages_deleted: int = 0
    messages_skipped: int = 0
    error: str | None = None
    # False when the failure was already announced another way (consent needed).
    notify_failure: bool = True
    # (uid, message_id, sender, subject, reason) of each message left behind.
    problems: list[tuple[int | None, str | None, str | None, str | None, str]] = field(
        default_factory=list
    )
    created_job_ids: list[int] = field(default_factory=list)

    def problem(self, uid: int | None, message: PreparedMessage | None, reason: str) -> None:
        info = message.info if message else None
        self.problems.append(
            (
                uid,
                info.message_id if info else None,
                info.sender if info else None,
                info.subject if info else None,
                reason,
            )
        )
