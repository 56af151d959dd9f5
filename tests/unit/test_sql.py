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
