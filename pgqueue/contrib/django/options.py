"""The flags of ``manage.py pgqueue_work``: those of ``pgqueue work``, made for Django's argparse
from the same declarations (:func:`pgqueue.settings.flag_settings`) and turned into settings by
the same code (:func:`pgqueue.cli.options.from_options`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from django.core.management import CommandError

from ...cli.options import from_options, param_name
from ...errors import ConfigurationError
from ...settings import ProcessSettings, Setting, WorkerConfig, check, flag_settings, parse_list


def add_work_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per setting ``pgqueue work`` takes as a flag, with its help."""
    for name, default, spec in flag_settings():
        assert spec.flag is not None
        if spec.kind is bool and spec.off is not None:  # on by default: a flag for each way
            parser.add_argument(
                spec.flag, dest=param_name(spec), action="store_true", default=None, help=spec.help
            )
            parser.add_argument(
                spec.off, dest=param_name(spec), action="store_false", help=f"Not {spec.flag}."
            )
            continue
        if spec.kind is bool:
            parser.add_argument(spec.flag, dest=param_name(spec), action="store_true", help=spec.help)
            continue
        shown = f" (default: {default})" if default is not None and spec.kind is not list else ""
        metavar = "|".join(spec.choices) if spec.choices else name.upper()
        parser.add_argument(
            spec.flag, dest=param_name(spec), default=None, metavar=metavar, help=f"{spec.help or ''}{shown}"
        )


def _value(name: str, spec: Setting, value: Any) -> Any:
    """A flag's value (text from the command line, or a value from ``call_command``), checked."""
    if spec.kind is list:
        return parse_list(name, spec, value) if isinstance(value, str) else check(name, spec, list(value))
    if isinstance(value, str) and spec.kind in (int, float):
        try:
            value = spec.kind(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    return check(name, spec, value)


def work_settings(options: dict[str, Any], defaults: dict[str, Any]) -> tuple[WorkerConfig, ProcessSettings]:
    """The worker's and the processes' settings: each flag given, else ``defaults`` (the
    ``PGQUEUE`` setting's, by field name), else the setting's own default."""
    values: dict[str, Any] = {}
    given: set[str] = set()
    try:
        for name, default, spec in flag_settings():
            key = param_name(spec)
            value = options.get(key)
            if spec.kind is bool and spec.off is not None:
                values[key] = default if value is None else bool(value)
                if value is not None:
                    given.add(name)
            elif spec.kind is bool:
                values[key] = bool(value)
                if value:
                    given.add(name)
            elif value is None:
                values[key] = default
            else:
                values[key] = _value(name, spec, value)
                given.add(name)
        config, process = from_options(values)
        fields = {f.name for f in dataclasses.fields(WorkerConfig)}
        unset = {k: v for k, v in defaults.items() if k in fields and k not in given}
        return dataclasses.replace(config, **unset).validated(), process
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
