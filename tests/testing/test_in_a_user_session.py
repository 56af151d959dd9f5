"""The plugin as users meet it: loaded by its entry point in a pytest session of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_a_users_suite_tests_its_handlers_with_the_plugin(pytester: pytest.Pytester, server_dsn: str):
    pytester.makepyfile(
        shop=textwrap.dedent(
            """
            import pgqueue

            app = pgqueue.App()

            @app.task("ship-order")
            def ship_order(order_id: int) -> dict:
                return {"shipped": order_id}

            def place_order(order_id: int) -> None:
                ship_order.enqueue(order_id=order_id)
            """
        ),
        test_shop=textwrap.dedent(
            """
            from pgqueue.testing import assert_enqueued
            import shop

            def test_ships(pgqueue_app, pgqueue_database_url):
                assert pgqueue_app is shop.app
                assert shop.app.database_url == pgqueue_database_url
                shop.place_order(1)
                [job] = assert_enqueued(shop.ship_order, order_id=1)
                pgqueue_app.drain()
                assert pgqueue_app.get_job(job.id).output == {"shipped": 1}

            def test_each_test_has_a_fresh_database(pgqueue_app):
                assert pgqueue_app.counts() == {}

            def test_a_failing_assertion_lists_the_jobs(pgqueue_app):
                shop.place_order(2)
                assert_enqueued(shop.ship_order, order_id=3)
            """
        ),
    )
    pytester.makeini("[pytest]\npgqueue_app = shop:app\n")
    env = {"PGQUEUE_TEST_DATABASE_URL": server_dsn, "PGQUEUE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*expected a 'ship-order' job with data including {'order_id': 3} to be enqueued; jobs waiting or running:",
            "*#1 ship-order created {'order_id': 2}",
        ]
    )


def test_the_example_test_file_passes(server_dsn: str):
    env = {**os.environ, "PGQUEUE_TEST_DATABASE_URL": server_dsn}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/test_tasks.py", "-q", "-p", "no:cacheprovider",
         "-o", "pgqueue_app=examples.tasks:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
