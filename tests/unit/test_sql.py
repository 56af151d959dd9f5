"""Every named statement renders, with identifiers quoted and no stray placeholders."""

from pgqueue.db.sql import _raw, grants, queries


def test_every_statement_renders_for_a_schema() -> None:
    q = queries("jobs_x")
    for name in _raw():
        if name == "grants":
            continue
        text = getattr(q, name).as_string(None)
        assert "{" not in text.replace("'{}'", ""), name
        if "{schema}" in _raw()[name]:
            assert '"jobs_x".' in text, name


def test_grants_quote_role_names() -> None:
    text = grants("pgqueue", 'evil"; DROP TABLE x; --', "producer")
    assert 'TO "evil""; DROP TABLE x; --"' in text
    assert text.count(";\n") == 19


def test_a_claims_json_lists_what_the_claim_returns_in_the_order_of_claimedjobs_fields() -> None:
    """The worker builds each ClaimedJob from an array by position: a column added to the claim
    must be added to its JSON and to ClaimedJob, in the same place."""
    import dataclasses
    import re

    from pgqueue.worker.records import ClaimedJob

    fields = [field.name for field in dataclasses.fields(ClaimedJob)]
    found = re.search(r"json_build_array\(([^)]*)\)", _raw()["claimed_json"])
    assert found is not None
    listed = found.group(1)
    returned = _raw()["claim_picked"].split("RETURNING", 1)[1]
    assert [name.strip() for name in listed.split(",")] == fields
    assert [name.strip().removeprefix("j.") for name in returned.split(",")] == fields
