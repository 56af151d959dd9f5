"""The worker's event loop: asyncio's own, or uvloop's when asked for or installed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from pgqueue.errors import ConfigurationError
from pgqueue.worker.aio import new_loop, run_blocking


def _module(loop: asyncio.AbstractEventLoop) -> str:
    try:
        return type(loop).__module__.partition(".")[0]
    finally:
        loop.close()


@pytest.mark.timeout(10)
def test_asyncio_is_asyncio_s_own_loop() -> None:
    assert _module(new_loop("asyncio")) == "asyncio"


@pytest.mark.timeout(10)
def test_uvloop_and_auto_give_uvloop_s_loop_when_it_is_installed() -> None:  # the dev extras install it
    assert _module(new_loop("uvloop")) == "uvloop"
    assert _module(new_loop("auto")) == "uvloop"


@pytest.mark.timeout(10)
def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert _module(new_loop("auto")) == "asyncio"
    with pytest.raises(ConfigurationError, match=r"pgqueue\[uvloop\]"):
        new_loop("uvloop")


@pytest.mark.timeout(10)
def test_an_unknown_loop_is_refused_and_the_coroutine_is_not_left_unawaited() -> None:
    ran = []

    async def main() -> None:
        ran.append(True)

    coroutine = main()
    refused = "event_loop must be one of auto, asyncio, uvloop, got 'trio'"
    with pytest.raises(ConfigurationError, match=refused):
        run_blocking(coroutine, "trio")
    assert coroutine.cr_frame is None  # closed, not left to warn "never awaited"
    assert ran == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["asyncio", "auto"])
def test_run_blocking_runs_the_coroutine_on_the_loop_asked_for(kind: str) -> None:
    seen = []

    async def main() -> None:
        await asyncio.sleep(0.01)
        seen.append(type(asyncio.get_running_loop()).__module__.partition(".")[0])

    run_blocking(main(), kind)
    assert seen == ["uvloop" if kind == "auto" else "asyncio"]
