"""pgqueue: a PostgreSQL-native background job queue.

>>> import pgqueue
>>> app = pgqueue.App()
>>> @app.task("send-welcome-email", queue="emails")
... def send_welcome_email(user_id: int) -> None: ...
>>> send_welcome_email.enqueue(user_id=42, conn=conn)
"""

from .app import App, Task, TaskCall
from .errors import (
    ConfigurationError,
    InvalidJob,
    JobNotFound,
    PayloadTooLarge,
    PgQueueError,
    SchemaOutOfDate,
    UnknownTask,
)
from .job import Job, JobState

__all__ = [
    "App",
    "ConfigurationError",
    "InvalidJob",
    "Job",
    "JobNotFound",
    "JobState",
    "PayloadTooLarge",
    "PgQueueError",
    "SchemaOutOfDate",
    "Task",
    "TaskCall",
    "UnknownTask",
]
