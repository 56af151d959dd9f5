"""JobId: an int that carries its job's uid; the bulk loader's uids."""

from __future__ import annotations

import json
import pickle
import time
import uuid

import pytest

from pgqueue import JobContext, JobId, JobNotFound
from pgqueue.job import job_ref, uuid7_hex


def test_uuid7_hex_gives_distinct_version_7_uuids_in_time_order() -> None:
    first = uuid7_hex(1000)
    time.sleep(0.002)
    later = uuid7_hex(1)
    uids = [uuid.UUID(text) for text in first + later]
    assert len(set(uids)) == 1001
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in uids)
    assert abs((uids[0].int >> 80) - time.time_ns() // 1_000_000) < 60_000
    assert uids[-1].int >> 80 > uids[0].int >> 80


V7 = 7 << 76 | 2 << 62 | 1


@pytest.mark.parametrize("given", [uuid.UUID(int=V7), f"{V7:032x}", str(uuid.UUID(int=V7)), V7])
def test_a_job_id_is_its_int_and_carries_its_uid(given: object) -> None:
    job_id = JobId(42, given)  # type: ignore[arg-type]
    assert job_id == 42 and isinstance(job_id, int) and hash(job_id) == hash(42)
    assert isinstance(job_id.uid, uuid.UUID) and job_id.uid.version == 7 and job_id.created
    assert str(job_id) == "42" and json.dumps({"id": job_id}) == '{"id": 42}'
    copy = pickle.loads(pickle.dumps(JobId(42, given, created=False)))  # type: ignore[arg-type]
    assert (copy, copy.uid, copy.created) == (42, job_id.uid, False)


def test_job_references() -> None:
    uid = uuid.uuid4()
    assert job_ref(5) == 5 and job_ref(JobId(5, uid)) == 5 and type(job_ref(JobId(5, uid))) is int
    assert job_ref(uid) == uid and job_ref(str(uid)) == uid and job_ref(f" {uid.hex} ") == uid
    for bad in ("5", "nope", 5.0, None, True, b"5"):
        with pytest.raises(JobNotFound):
            job_ref(bad)


def test_a_handlers_context_reads_its_uid_and_carries_it_to_a_child_process() -> None:
    uid = uuid.UUID(int=V7)
    context = JobContext(7, "t", "default", 1, 5, lease_id=uuid.uuid4(), _uid=str(uid))  # as the claim gives it
    assert context.uid == uid and context.uid is context.uid
    child = JobContext._from_json(json.loads(json.dumps(context._to_json())))
    assert child.uid == uid and child.lease_id == context.lease_id
    assert JobContext(7, "t", "default", 1, 5).uid is None
