"""What each scenario is judged by, read from the database after the run.

- **lost**: jobs enqueued that ended neither ``completed`` nor ``failed``.
- **double-completed**: jobs that were marked ``completed`` more than once (a trigger on the
  job table writes every transition into or out of a final state to ``completion_log``).
- **re-executions**: handler executions beyond the first of each job (from the ledger);
  delivery is at-least-once, so these are reported and bounded, not forbidden.
- **recovery**: seconds from a fault to the queue working again; each scenario says what it measures.

A scenario passes only with lost = 0 and double-completed = 0. Each prints one line
(``pytest -s`` shows it) and appends a row to ``results/report.tsv`` next to this file.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psycopg

RESULTS = Path(__file__).resolve().parent / "results"

NOT_EXECUTIONS = ("duplicate-effect", "claim-lost", "crashing")
"""Ledger notes a handler writes beside its execution's own row (see reliability_app): not
executions, so left out of the counts of executions."""

# Created once in the suite's template database; owned by the superuser.
LEDGER_DDL = """
CREATE TABLE ledger (
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    note    text,
    lease_id uuid,
    execution uuid UNIQUE
);
CREATE INDEX ledger_job ON ledger (job_id);

CREATE TABLE effects (
    job_id  bigint PRIMARY KEY,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE orders (id bigint PRIMARY KEY);

CREATE TABLE completion_log (
    job_id     bigint NOT NULL,
    attempts   integer NOT NULL,
    worker_id  text,
    old_state  text NOT NULL,
    new_state  text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- SECURITY DEFINER: the worker role writes the log through the trigger without a grant on it.
CREATE FUNCTION log_final_transition() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.completion_log (job_id, attempts, worker_id, old_state, new_state)
    VALUES (NEW.id, NEW.attempts, NEW.worker_id, OLD.state::text, NEW.state::text);
    RETURN NULL;
END $$;

CREATE TRIGGER job_final_transition AFTER UPDATE ON pgqueue.job
FOR EACH ROW WHEN (NEW.state::text IN ('completed', 'failed', 'cancelled')
                   OR OLD.state::text IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION log_final_transition();
"""


@dataclass
class Score:
    scenario: str
    jobs: int
    completed: int = 0
    failed: int = 0
    lost: int = 0
    double_completed: int = 0
    resurrected: int = 0
    executions: int = 0
    re_executions: int = 0
    same_claim_twice: int = 0
    same_claim_rows: list[tuple[Any, ...]] = field(default_factory=list)
    """The ledger rows of the claims run twice: (job, lease, attempt, pid, at, note)."""
    recovery: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recovery = "-" if self.recovery is None else f"{self.recovery:.2f}s"
        extra = " ".join(f"{k}={_short(v)}" for k, v in self.extra.items())
        return (f"[{self.scenario}] jobs={self.jobs} completed={self.completed} failed={self.failed} "
                f"lost={self.lost} double-completed={self.double_completed} "
                f"re-executions={self.re_executions} recovery={recovery} run={self.seconds:.1f}s {extra}").rstrip()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def measure(
    conn: psycopg.Connection[Any], scenario: str, job_ids: Iterable[int], *, started: float,
    recovery: float | None = None, **extra: Any,
) -> Score:
    """Score the jobs ``job_ids`` (every job the scenario enqueued) and report the line and row."""
    ids = sorted(set(job_ids))
    states = dict(conn.execute(
        "SELECT state::text, count(*) FROM pgqueue.job WHERE id = ANY(%s) GROUP BY 1", (ids,)
    ).fetchall())
    score = Score(scenario, len(ids), recovery=recovery, extra=extra)
    score.completed = states.get("completed", 0)
    score.failed = states.get("failed", 0)
    score.lost = score.jobs - score.completed - score.failed
    score.double_completed = conn.execute(
        "SELECT count(*) FROM (SELECT job_id FROM completion_log WHERE job_id = ANY(%s) AND new_state = 'completed' "
        "GROUP BY job_id HAVING count(*) > 1) AS twice", (ids,)
    ).fetchone()[0]
    score.resurrected = conn.execute(
        "SELECT count(DISTINCT job_id) FROM completion_log WHERE job_id = ANY(%s) "
        "AND old_state IN ('completed', 'failed', 'cancelled')", (ids,)
    ).fetchone()[0]
    # A row whose job held no lease when it was written (the lease had expired and the job was
    # handed back under a stalled handler) belongs to no claim: it is left out of the
    # same-claim count (a row value with a NULL field is still counted by count(DISTINCT ...)).
    row = conn.execute(
        "SELECT count(*), count(DISTINCT job_id), "
        "count(lease_id) - count(DISTINCT (job_id, lease_id)) FILTER (WHERE lease_id IS NOT NULL) "
        "FROM ledger WHERE job_id = ANY(%s) AND (note IS NULL OR note <> ALL(%s))",
        (ids, list(NOT_EXECUTIONS)),
    ).fetchone()
    score.executions, distinct, score.same_claim_twice = row
    if score.same_claim_twice:
        score.same_claim_rows = conn.execute(
            "SELECT job_id, lease_id, attempt, pid, at, note FROM ledger l WHERE job_id = ANY(%s) "
            "AND (SELECT count(*) FROM ledger m WHERE m.job_id = l.job_id AND m.lease_id = l.lease_id "
            "AND (m.note IS NULL OR m.note <> ALL(%s))) > 1 "
            "ORDER BY job_id, at", (ids, list(NOT_EXECUTIONS))
        ).fetchall()
    score.re_executions = score.executions - distinct
    score.seconds = time.monotonic() - started
    report(score)
    return score


def report(score: Score) -> None:
    print("\n" + score.line(), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "report.tsv"
    new = not path.exists()
    with path.open("a") as out:
        if new:
            out.write("time\tscenario\tjobs\tcompleted\tfailed\tlost\tdouble_completed\tre_executions\t"
                      "recovery_s\trun_s\textra\n")
        recovery = "" if score.recovery is None else f"{score.recovery:.3f}"
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{score.scenario}\t{score.jobs}\t{score.completed}\t"
                  f"{score.failed}\t{score.lost}\t{score.double_completed}\t{score.re_executions}\t{recovery}\t"
                  f"{score.seconds:.1f}\t{json.dumps(score.extra, default=str)}\n")


def assert_sound(score: Score, *, max_failed: int = 0, max_re_executions: int | None = None) -> None:
    """The invariants every scenario holds: nothing lost, nothing completed twice, no final job
    brought back, no claim run twice; then the scenario's own bounds."""
    problems = []
    if score.lost:
        problems.append(f"{score.lost} job(s) lost")
    if score.double_completed:
        problems.append(f"{score.double_completed} job(s) completed twice")
    if score.resurrected:
        problems.append(f"{score.resurrected} job(s) left a final state")
    if score.same_claim_twice:
        problems.append(f"{score.same_claim_twice} claim(s) executed twice under the same lease: "
                        f"{score.same_claim_rows}")
    if score.failed > max_failed:
        problems.append(f"{score.failed} job(s) failed (at most {max_failed} may)")
    if max_re_executions is not None and score.re_executions > max_re_executions:
        problems.append(f"{score.re_executions} re-executions (at most {max_re_executions})")
    assert not problems, f"{score.scenario}: " + "; ".join(problems) + "\n" + score.line()


def wait_finished(conn: psycopg.Connection[Any], job_ids: list[int], timeout: float) -> float | None:
    """Wait until every job is completed or failed; the seconds it took, or None on timeout
    (the score then shows what was left as lost)."""
    started = time.monotonic()
    while True:
        left = conn.execute(
            "SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state NOT IN ('completed', 'failed')",
            (job_ids,),
        ).fetchone()[0]
        if left == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.2)


def rescue_delays(db: Any, kills: dict[int, float]) -> list[float]:
    """Seconds from each kill to the rescue of the last job the killed worker held."""
    rows = db.conn.execute(
        "SELECT e->>'error', extract(epoch FROM (e->>'at')::timestamptz) "
        "FROM pgqueue.job, jsonb_array_elements(coalesce(errors, '[]')) AS e "
        "WHERE e->>'error' LIKE 'lease expired%%'"
    ).fetchall()
    last: dict[int, float] = {}
    for error, at in rows:
        found = re.search(r"the worker [^ ]*:(\d+):", error)
        if found and int(found.group(1)) in kills:
            pid = int(found.group(1))
            last[pid] = max(last.get(pid, 0.0), float(at))
    return [at - kills[pid] for pid, at in last.items()]

