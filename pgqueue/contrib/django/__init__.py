"""pgqueue in a Django project: add ``"pgqueue.contrib.django"`` to ``INSTALLED_APPS``.

>>> # settings.py
>>> PGQUEUE = {"QUEUES": ["default", "emails"], "CONCURRENCY": 20}      # all optional
>>> TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.TaskBackend"}}  # Django's tasks, on pgqueue

>>> # myapp/tasks.py
>>> from pgqueue.contrib.django import app
>>> @app.task("send-welcome-email", queue="emails")
... def send_welcome_email(user_id: int) -> None: ...
>>> with transaction.atomic():
...     user = User.objects.create(email=email)
...     send_welcome_email.enqueue(user_id=user.pk)      # joins the transaction: no conn= to pass

``manage.py pgqueue_migrate`` creates pgqueue's tables; ``manage.py pgqueue_work`` imports every
installed app's ``tasks`` module and runs a worker (the flags of ``pgqueue work``).

``app`` (a :class:`~pgqueue.contrib.django.djangoapp.DjangoApp`) and ``TaskBackend`` are made on
first access, so that importing this package needs neither configured settings nor the tasks
framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import TaskBackend
    from .djangoapp import DjangoApp

__all__ = ["DjangoApp", "TaskBackend", "app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from .djangoapp import get_app

        return get_app()
    if name == "DjangoApp":
        from .djangoapp import DjangoApp

        return DjangoApp
    if name == "TaskBackend":
        from .backend import TaskBackend

        return TaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
