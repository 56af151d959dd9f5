"""The sync modules generated from their async source must match what the source gives now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "async_to_sync.py"


def test_generated_sync_modules_match_their_async_source() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rewrite_keeps_the_sync_side_of_marked_blocks() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import async_to_sync
    finally:
        sys.path.remove(str(SCRIPT.parent))
    source = '''"""Doc."""

import asyncio  # async only


async def go(conn: AsyncConnection) -> None:
    if True:  # async
        await asyncio.sleep(0)
    else:  # sync
        with lock:
            pass
    # sync: lock.release()
    async with conn.transaction():
        await arun(conn, op)
'''
    generated = async_to_sync.convert("a/_x_async.py", source)
    first = generated.splitlines()[0]
    assert first == "# generated from a/_x_async.py by tools/async_to_sync.py; do not edit"
    body = generated.split('"""The sync twin of ``_x_async.py``: see there."""\n', 1)[1]
    assert body == '''

def go(conn: Connection) -> None:
    with lock:
        pass
    lock.release()
    with conn.transaction():
        run(conn, op)
'''
