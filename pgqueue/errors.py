"""Errors pgqueue raises. Every one derives from :class:`PgQueueError`."""

from __future__ import annotations

from typing import Any


class PgQueueError(Exception):
    """Base class of every error pgqueue raises on purpose."""


class ConfigurationError(PgQueueError, ValueError):
    """A setting is invalid: a database URL, a schema name, a worker option."""


class InvalidJob(PgQueueError, ValueError):
    """A job was refused before anything was written: bad data, name or option.

    The caller's transaction is untouched and stays usable.
    """


class PayloadTooLarge(InvalidJob):
    """The job's data, encoded as JSON, is larger than the app's ``max_payload_bytes``."""


class SchemaOutOfDate(PgQueueError):
    """The database schema is missing or at another version than this pgqueue expects."""


class JobNotFound(PgQueueError, LookupError):
    """No job has that id."""


class UnknownTask(PgQueueError, LookupError):
    """No handler is registered under that job type."""


class LeaseLost(PgQueueError):
    """This attempt no longer holds its job: it was rescued after its lease expired, cancelled,
    or completed already. Raised by :meth:`pgqueue.JobContext.complete`; let it propagate so that
    the handler's transaction rolls back and its effects are not written twice."""


class JobCancelled(PgQueueError):
    """The job was cancelled. Raised inside a handler by :meth:`pgqueue.JobContext.check_cancelled`
    once its running job is cancelled (let it propagate: nothing it returns is recorded), and by
    :meth:`pgqueue.App.wait_for` / ``await_result`` for a job that ended cancelled."""

    def __init__(self, message: str, job_id: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(PgQueueError):
    """The job failed for good (no attempt left): raised by :meth:`pgqueue.App.wait_for` and
    ``await_result``. ``error`` is the last attempt's recorded error, ``job`` the finished row."""

    def __init__(self, message: str, job_id: int, error: str | None, job: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.error = error
        self.job = job


class EnqueueTimeout(PgQueueError, TimeoutError):
    """An enqueue (or another call) on the App's own pool did not finish within the App's
    ``enqueue_timeout``: no connection could be had, or the database did not answer in time.

    The message says which. When the statement had been sent, the job may or may not have been
    written: the caller cannot know. Retry with a ``unique_key``, or make the handler idempotent.
    """
