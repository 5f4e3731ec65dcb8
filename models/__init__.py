"""SQLAlchemy models. This package imports nothing else of the application."""

from .base import Base, UTCDateTime, utcnow
from .connectors import (
    AfterProcessing,
    Aggregation,
    AuthMethod,
    Connector,
    ConnectorRun,
    ConnectorStore,
    JobKind,
    MessageFailure,
    RunProblem,
    RunStatus,
    SourceLocation,
    StoreRole,
    connector_target_languages,
)
from .jobs import Job, JobFile, LedgerState, ProcessedMessage, job_target_languages
from .mail_accounts import MailAccount, OAuthState, TokenStatus
from .outgoing import (
    Branch,
    ConnectionType,
    OutboxMessage,
    OutboxStatus,
    SmtpAuthMethod,
    SmtpSettings,
)
from .reference import BudgetCode, Client, Language, Service, Specialization
from .users import User

__all__ = [
    "AfterProcessing",
    "ConnectorStore",
    "MessageFailure",
    "SourceLocation",
    "StoreRole",
    "Aggregation",
    "AuthMethod",
    "Base",
    "Branch",
    "ConnectionType",
    "BudgetCode",
    "Client",
    "Connector",
    "ConnectorRun",
    "Job",
    "JobFile",
    "JobKind",
    "Language",
    "LedgerState",
    "MailAccount",
    "OAuthState",
    "OutboxMessage",
    "OutboxStatus",
    "ProcessedMessage",
    "RunProblem",
    "RunStatus",
    "Service",
    "SmtpAuthMethod",
    "SmtpSettings",
    "Specialization",
    "TokenStatus",
    "UTCDateTime",
    "User",
    "connector_target_languages",
    "job_target_languages",
    "utcnow",
]
