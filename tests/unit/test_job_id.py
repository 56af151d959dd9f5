"""JobId: an int that carries its job's uid; the bulk loader's uids."""

from __future__ import annotations

import json
import pickle
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from pgqueue import JobContext, JobId, JobNotFound
from pgqueue.job import job_ref, job_uids_hex, uid_job_id


def test_bulk_uids_carry_their_ids_and_the_time_and_differ_for_one_id() -> None:
    now = datetime.now(timezone.utc)
    ids = [1, 2, 41, (1 << 62) + 5, (1 << 63) - 1]
    uids = [uuid.UUID(text) for text in job_uids_hex(ids, now)]
    assert [uid_job_id(u) for u in uids] == ids
    assert all((u.int >> 76) & 0xF == 8 and u.int >> 80 == int(now.timestamp() * 1000) for u in uids)
    assert all(u.version == 8 and u.variant == uuid.RFC_4122 for u in uids[:3])
    # The same id at the same millisecond (a new primary's after a failover) gets other random bits.
    again = {uuid.UUID(job_uids_hex([41], now)[0]) for _ in range(20)}
    assert len(again) > 1 and {uid_job_id(u) for u in again} == {41}
    later = uuid.UUID(job_uids_hex([1], now + timedelta(milliseconds=2))[0])
    assert later.int >> 80 > uids[0].int >> 80
    # A uid of another layout names no id: it is looked up by its own index.
    assert uid_job_id(uuid.uuid4()) is None and uid_job_id(uuid.UUID(int=V7)) is None


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
