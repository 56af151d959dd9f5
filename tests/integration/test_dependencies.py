"""Dependencies: a job waits until the jobs it depends on completed; one of them failing for
good, being cancelled or deleted (or missing) cancels it, with the cause, transitively."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import InvalidJob

pytestmark = pytest.mark.timeout(60)


def state(conn: psycopg.Connection[Any], job_id: int) -> tuple[str, str | None]:
    found = conn.execute("SELECT state::text, error FROM pgqueue.job WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return found


def graph_app(app: pgqueue.App, ran: list[str], failing: set[str]) -> Any:
    @app.task("step", max_attempts=1)
    def step(name: str) -> str:
        ran.append(name)
        if name in failing:
            raise RuntimeError(f"{name} broke")
        return name

    return step


def test_a_diamond_runs_in_order_and_a_failing_branch_cancels_its_dependents_transitively(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ran: list[str] = []
    step = graph_app(app, ran, failing={"bad-left"})
    with psycopg.connect(dsn) as tx:  # the whole graph in one transaction
        top = step.enqueue(conn=tx, name="top")
        left = step.using(depends_on=[top]).enqueue(conn=tx, name="left")
        right = step.using(depends_on=[top]).enqueue(conn=tx, name="right")
        bottom = step.using(depends_on=[left, right]).enqueue(conn=tx, name="bottom")
        # A second diamond under the same top, whose left branch fails.
        bad_left = step.using(depends_on=[top]).enqueue(conn=tx, name="bad-left")
        bad_bottom = step.using(depends_on=[bad_left, right]).enqueue(conn=tx, name="bad-bottom")
        after_bad = step.using(depends_on=[bad_bottom]).enqueue(conn=tx, name="after-bad")
    assert state(conn, bottom) == ("created", None)
    app.drain(concurrency=4)
    assert ran[0] == "top" and ran.index("bottom") > max(ran.index("left"), ran.index("right"))
    assert sorted(ran) == ["bad-left", "bottom", "left", "right", "top"]
    assert state(conn, bottom)[0] == "completed"
    assert state(conn, bad_left)[0] == "failed"
    assert state(conn, bad_bottom) == ("cancelled", f"dependency {bad_left} failed")
    assert state(conn, after_bad) == (
        "cancelled",
        f"dependency {bad_bottom} cancelled; caused by dependency {bad_left} failed",
    )
    assert conn.execute("SELECT count(*) FROM pgqueue.dependency").fetchone() == (0,)


def test_a_waiting_dependent_is_not_claimed_until_its_last_dependency_completes(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    ran: list[str] = []
    step = graph_app(app, ran, failing=set())
    gate = step.using(queue="later").enqueue(name="gate")  # no worker serves "later" yet
    first = step.enqueue(name="first")
    waiting = step.using(depends_on=[gate, first]).enqueue(name="waiting")
    app.drain()
    assert ran == ["first"]
    job = app.get_job(waiting)
    assert job.state is pgqueue.JobState.CREATED and job.dependencies_left == 1 and job.run_at.year == 9999
    app.drain(queues=["later", "default"])
    assert ran == ["first", "gate", "waiting"]


@pytest.mark.parametrize("how", ["cancel", "delete", "missing", "already failed"])
def test_a_cancelled_deleted_missing_or_failed_dependency_cancels_the_dependent(
    app: pgqueue.App, conn: psycopg.Connection[Any], how: str
) -> None:
    step = graph_app(app, [], failing=set())
    dependency = step.using(queue="nobody").enqueue(name="dep")
    if how == "missing":
        dependency = 10**12
    if how == "already failed":
        conn.execute("UPDATE pgqueue.job SET state = 'failed' WHERE id = %s", (dependency,))
    dependent = step.using(depends_on=[dependency]).enqueue(name="dependent")
    grandchild = step.using(depends_on=[dependent]).enqueue(name="grandchild")
    if how == "cancel":
        assert app.cancel_job(dependency)
    if how == "delete":
        assert app.delete_job(dependency)
    expected = {
        "cancel": f"dependency {dependency} cancelled",
        "delete": f"dependency {dependency} was deleted",
        "missing": f"dependency {dependency} does not exist",
        "already failed": f"dependency {dependency} failed",
    }[how]
    assert state(conn, dependent) == ("cancelled", expected)
    if how in ("cancel", "delete"):  # cancelled when the dependency went: the root cause is kept
        assert state(conn, grandchild) == (
            "cancelled",
            f"dependency {dependent} cancelled; caused by {expected}",
        )
    else:  # cancelled at its enqueue: the cause is its own dependency's state
        assert state(conn, grandchild) == ("cancelled", f"dependency {dependent} cancelled")


def test_a_completed_dependency_and_a_rolled_back_graph(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ran: list[str] = []
    step = graph_app(app, ran, failing=set())
    done = step.enqueue(name="done")
    app.drain()
    after = step.using(depends_on=[done, done]).enqueue(name="after")  # listed twice: one link
    assert app.get_job(after).run_at.year < 9999
    app.drain()
    assert ran == ["done", "after"]
    with psycopg.connect(dsn) as tx:
        root = step.enqueue(conn=tx, name="root")
        step.using(depends_on=[root]).enqueue(conn=tx, name="leaf")
        tx.rollback()
    assert conn.execute("SELECT count(*) FROM pgqueue.dependency").fetchone() == (0,)


def test_a_dependency_finishing_while_the_dependent_is_enqueued_does_not_strand_it(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    """The enqueue marks the dependency first: whichever transaction commits second sees the other."""
    step = graph_app(app, [], failing=set())
    for order in ("enqueue first", "finish first"):
        dependency = step.enqueue(name="dep")
        with psycopg.connect(dsn) as enqueuer, psycopg.connect(dsn) as finisher:
            if order == "enqueue first":
                dependent = step.using(depends_on=[dependency]).enqueue(conn=enqueuer, name="x")
                finished = threading.Thread(
                    target=lambda: (
                        finisher.execute(
                            "UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = %s",
                            (dependency,),
                        )
                        and finisher.commit()
                    )
                )
                finished.start()  # blocks on the enqueuer's row lock
                finished.join(0.3)
                assert finished.is_alive()
                enqueuer.commit()
                finished.join(10)
            else:
                finisher.execute(
                    "UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = %s",
                    (dependency,),
                )
                result: list[int | None] = []
                started = threading.Thread(
                    target=lambda: (
                        result.append(step.using(depends_on=[dependency]).enqueue(conn=enqueuer, name="x"))
                        or enqueuer.commit()
                    )
                )
                started.start()  # blocks on the finisher's row lock
                started.join(0.3)
                assert started.is_alive()
                finisher.commit()
                started.join(10)
                dependent = result[0]
        assert dependent is not None
        job = conn.execute(
            "SELECT state::text, run_at < now() + interval '1 hour', dependencies_left FROM pgqueue.job WHERE id = %s",
            (dependent,),
        ).fetchone()
        assert job == ("created", True, 0), order


def test_bad_dependencies_are_refused_before_anything_is_written(app: pgqueue.App) -> None:
    step = graph_app(app, [], failing=set())
    for bad in ("1,2", [None], [0], ["7"], [True]):
        with pytest.raises(InvalidJob, match="depends_on"):
            step.using(depends_on=bad)
    with pytest.raises(InvalidJob, match="no delay or run_at"):
        step.using(depends_on=[1], delay=5)


def test_a_handler_completing_in_its_own_transaction_releases_its_dependents(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ran: list[str] = []

    @app.task("own")
    def own() -> None:
        with psycopg.connect(dsn) as mine, mine.transaction():
            pgqueue.current_job().complete(mine, output="mine")
        ran.append("own")

    step = graph_app(app, ran, failing=set())
    first = own.enqueue()
    then = step.using(depends_on=[first]).enqueue(name="then")
    app.drain()
    assert ran == ["own", "then"]
    assert app.get_job(first).output == "mine" and app.get_job(then).state is pgqueue.JobState.COMPLETED


def test_a_long_chain_is_cancelled_to_its_end_by_a_loop_not_recursion(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    step = graph_app(app, [], failing=set())
    with psycopg.connect(dsn) as tx:
        chain = [step.using(queue="nobody").enqueue(conn=tx, name="0")]
        for n in range(1, 2000):  # nested triggers would run out of stack long before
            chain.append(step.using(depends_on=[chain[-1]]).enqueue(conn=tx, name=str(n)))
    with psycopg.connect(dsn) as tx:
        assert app.cancel_job(chain[0], conn=tx)
        # The marker that keeps the loop's own cancels from cascading again is gone after it.
        marker = tx.execute("SELECT current_setting('pgqueue_lifecycle.cascading', true)").fetchone()
        assert marker in ((None,), ("",))
    assert conn.execute(
        "SELECT count(*) FROM pgqueue.job WHERE state = 'cancelled' AND id = ANY(%s)", (chain,)
    ).fetchone() == (2000,)
    assert state(conn, chain[-1]) == (
        "cancelled",
        f"dependency {chain[-2]} cancelled; caused by dependency {chain[0]} cancelled",
    )
    assert conn.execute("SELECT count(*) FROM pgqueue.dependency").fetchone() == (0,)
