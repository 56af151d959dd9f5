"""JobContext: what a handler sees of its job, and how it crosses to a process-executor child."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest

import pgqueue
from pgqueue.context import JobContext

pytestmark = pytest.mark.timeout(10)


def test_repr_keeps_the_lease_and_schema_out():
    lease = uuid.uuid4()
    context = JobContext(7, "charge", "default", 2, 5, lease_id=lease, schema="billing",
                         started=time.monotonic())
    assert repr(context) == "JobContext(id=7, type='charge', queue='default', attempt=2, max_attempts=5)"
    assert str(lease) not in repr(context) and "billing" not in repr(context)


def test_the_context_crosses_to_a_child_process_as_json():
    lease = uuid.uuid4()
    context = JobContext(7, "charge", "default", 2, 5, lease_id=lease, schema="billing", started=123.5)
    wire = json.loads(json.dumps(context._to_json()))
    assert wire["lease_id"] == str(lease)
    back = JobContext._from_json(wire)
    assert back == context and back.lease_id == lease and back.schema == "billing" and back.started == 123.5
    assert JobContext._from_json(JobContext(1, "t", "q", 1, 1)._to_json()).lease_id is None


def test_complete_needs_a_context_with_a_lease():
    with pytest.raises(RuntimeError, match="no lease"):
        JobContext(1, "t", "q", 1, 1).complete(conn=None)


def test_lease_lost_is_a_pgqueue_error():
    assert issubclass(pgqueue.LeaseLost, pgqueue.PgQueueError) and "LeaseLost" in pgqueue.__all__


def test_the_workers_quick_constructor_makes_what_the_dataclass_makes():
    """``JobContext._started`` fills the instance's dict in one update: it must set every field
    ``__init__`` sets (a field added to the class and not to it would be missing from every
    context a worker makes), and nothing else but the progress sink."""

    def sink(report: dict) -> None: ...

    made = JobContext(7, "charge", "q", 2, 5, lease_id="lease", schema="billing", started=1.5, _uid="uid")
    quick = JobContext._started(7, "charge", "q", 2, 5, "lease", "billing", 1.5, "uid", sink)
    assert quick == made and repr(quick) == repr(made)
    assert set(vars(quick)) - set(vars(made)) == {"_progress_sink"} and set(vars(made)) <= set(vars(quick))
    assert {name: getattr(quick, name) for name in vars(made) if name != "_cancel_event"} == {
        name: getattr(made, name) for name in vars(made) if name != "_cancel_event"
    }
    assert quick._progress_sink is sink and not quick.cancelled and not quick._completed
    quick._cancel()
    assert quick.cancelled and not made.cancelled  # a flag of its own
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.id = 8  # type: ignore[misc]
