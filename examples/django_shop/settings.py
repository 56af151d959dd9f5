"""Settings of the Django shop example. The database: ``PGQUEUE_DATABASE_URL``, else
``DATABASE_URL``, else pgqueue's embedded server (nothing to set up)."""

from __future__ import annotations

import importlib.util

import psycopg

from pgqueue.settings import resolve_database_url

_info = psycopg.conninfo.conninfo_to_dict(resolve_database_url())

SECRET_KEY = "example-only"
USE_TZ = True
DEBUG = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _info.get("dbname", "postgres"),
        "USER": _info.get("user", ""),
        "PASSWORD": _info.get("password", ""),
        "HOST": _info.get("host", ""),
        "PORT": _info.get("port", ""),
    }
}
# Django 6 has its tasks framework built in; before it, the django-tasks backport is an app.
_BACKPORT = importlib.util.find_spec("django.tasks") is None
INSTALLED_APPS = [*(["django_tasks"] if _BACKPORT else []), "pgqueue.contrib.django", "examples.django_shop"]
TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.TaskBackend"}}
PGQUEUE = {"CONCURRENCY": 10, "POLL_INTERVAL": 0.1}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
