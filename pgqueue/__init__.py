"""pgqueue: a PostgreSQL-native background job queue.

>>> import pgqueue
>>> app = pgqueue.App()
>>> @app.task("send-welcome-email", queue="emails")
... def send_welcome_email(user_id: int) -> None: ...
>>> send_welcome_email.enqueue(user_id=42, conn=conn)
"""

from .app import App
from .context import JobContext, current_job
from .errors import (
    ConfigurationError,
    EnqueueTimeout,
    InvalidJob,
    JobCancelled,
    JobFailed,
    JobNotFound,
    LeaseLost,
    PayloadTooLarge,
    PgQueueError,
    SchemaOutOfDate,
    UnknownTask,
)
from .job import Job, JobId, JobState
from .limits import UNLIMITED, RateLimit
from .settings import WorkerConfig
from .task import Task, TaskCall

__all__ = [
    "UNLIMITED",
    "App",
    "ConfigurationError",
    "EnqueueTimeout",
    "InvalidJob",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobId",
    "JobNotFound",
    "JobState",
    "LeaseLost",
    "PayloadTooLarge",
    "PgQueueError",
    "RateLimit",
    "SchemaOutOfDate",
    "Task",
    "TaskCall",
    "UnknownTask",
    "WorkerConfig",
    "current_job",
]
