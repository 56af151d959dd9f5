"""Django's tasks framework: ``django.tasks`` (Django 6+) if present, else the ``django-tasks``
backport (``django_tasks``, same API). The one place that chooses; everything else imports
the names from here.

The names differ in one place: the error for an invalid task is ``InvalidTask`` in Django 6 and
``InvalidTaskError`` in the backport; it is ``InvalidTaskError`` here. ``normalize_json`` is
``django.utils.json.normalize_json`` in Django 6 and ``django_tasks.utils.normalize_json`` in
the backport.
"""

from __future__ import annotations

from importlib.util import find_spec

from django.core.exceptions import ImproperlyConfigured

if find_spec("django.tasks") is not None:  # pragma: no cover - Django 6 needs Python 3.12
    from django.tasks import task_backends  # type: ignore[import-not-found,no-redef,unused-ignore]
    from django.tasks.backends.base import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        BaseTaskBackend,
    )
    from django.tasks.base import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        DEFAULT_TASK_QUEUE_NAME,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.exceptions import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        InvalidTask as InvalidTaskError,
    )
    from django.tasks.exceptions import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        TaskResultDoesNotExist,
    )
    from django.tasks.signals import (  # type: ignore[import-not-found,no-redef,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django.utils.json import normalize_json  # type: ignore[import-not-found,no-redef,unused-ignore]
else:
    try:
        from django_tasks import task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import (
            DEFAULT_TASK_QUEUE_NAME,
            TASK_MAX_PRIORITY,
            TASK_MIN_PRIORITY,
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    except ImportError as exc:
        raise ImproperlyConfigured(
            "pgqueue's Django task backend needs Django 6, or the django-tasks backport: "
            "pip install 'pgqueue[django]'"
        ) from exc

__all__ = [
    "DEFAULT_TASK_QUEUE_NAME",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
