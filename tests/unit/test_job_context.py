"""JobContext: what a handler sees of its job, and how it crosses to a process-executor child."""

from __future__ import annotations

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
