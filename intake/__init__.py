"""The connector run: from a mailbox folder to committed jobs and deleted mail."""

from .context import IntakeContext
from .outcome import RunOutcome
from .run import run_connector

__all__ = ["IntakeContext", "RunOutcome", "run_connector"]
