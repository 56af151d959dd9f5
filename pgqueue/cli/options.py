"""The ``pgqueue work`` flags, generated from the settings' declarations in :mod:`pgqueue.settings`."""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..errors import ConfigurationError
from ..settings import ProcessSettings, Setting, WorkerConfig, check, declared, flag_settings, parse_list


def param_name(spec: Setting) -> str:
    """The Python name of a setting's flag: ``--no-listen`` is ``no_listen``."""
    assert spec.flag is not None
    return spec.flag.lstrip("-").replace("-", "_")


def _checker(name: str, spec: Setting) -> Callable[[Any], Any]:
    """A flag callback that applies the setting's own check, so a flag and the field it sets refuse
    the same values (with the flag named in the message)."""

    def callback(value: Any) -> Any:
        if value is None or spec.kind is bool:
            return value
        try:
            if spec.kind is list:
                return parse_list(name, spec, value)
            return check(name, spec, value.value if isinstance(value, enum.Enum) else value)
        except ConfigurationError as exc:
            raise typer.BadParameter(str(exc)) from None

    return callback


def _choices(name: str, choices: tuple[str, ...]) -> type[enum.Enum]:
    """An Enum of a setting's choices, which typer shows as ``<a|b|c>`` and matches case-insensitively."""
    members = {choice: choice for choice in choices}
    return enum.Enum(name.title().replace("_", ""), members, type=str)  # type: ignore[return-value]


def option(name: str, default: Any, spec: Setting) -> inspect.Parameter:
    """The typer parameter of one setting's flag."""
    kwargs: dict[str, Any] = {"envvar": spec.env, "help": spec.help}
    annotation: Any
    flags = [spec.flag or ""]
    if spec.kind is bool and spec.off is not None:
        annotation, flags = bool, [f"{spec.flag}/{spec.off}"]
    elif spec.kind is bool:
        annotation, default = bool, False  # the flag's presence sets the non-default value
    elif spec.kind is list:
        annotation, default = str | None, None
        kwargs["callback"] = _checker(name, spec)
    elif spec.choices:
        choices = _choices(name, spec.choices)
        annotation, default = choices, choices(default)
        kwargs["case_sensitive"] = False
    else:
        annotation = spec.kind
        # Closed bounds show in the help and are checked by the flag's type; open ones (and NaN) by the check.
        if spec.low is not None and not spec.low_open:
            kwargs["min"] = spec.low
        if spec.high is not None and not spec.high_open:
            kwargs["max"] = spec.high
        kwargs["callback"] = _checker(name, spec)
    return inspect.Parameter(
        param_name(spec),
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*flags, **kwargs)],
    )


def with_work_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` (whose last parameter is ``**options``) one keyword parameter per flag setting;
    it is then called with ``config`` and ``process`` (see :func:`from_options`) in their place."""
    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.name not in ("config", "process")]
    generated = [option(name, default, spec) for name, default, spec in flag_settings()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {param_name(spec): kwargs.pop(param_name(spec)) for _, _, spec in flag_settings()}
        config, process = from_options(values)
        return command(*args, config=config, process=process, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*fixed, *generated])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*fixed, *generated]}
    return wrapper


def from_options(values: dict[str, Any]) -> tuple[WorkerConfig, ProcessSettings]:
    """The settings that parsed flag values (keyed by :func:`param_name`) stand for."""
    built: list[Any] = []
    for cls in (WorkerConfig, ProcessSettings):
        fields = {}
        for name, _, spec in declared(cls):
            if spec.flag is None:
                continue
            value = values[param_name(spec)]
            if spec.negate:
                value = not value
            elif isinstance(value, enum.Enum):
                value = value.value
            fields[name] = value
        built.append(cls(**fields).validated())
    return built[0], built[1]
