"""Policy expressions: every operator, precedence, comparisons on missing data, match
conditions, errors that point at the column, and the keep / review / remove decision."""
from __future__ import annotations

import copy
import itertools
import pickle

import pytest

from transforms.captions import CAPTION_FLAGS
from transforms.policy import (
    Policy,
    PolicyError,
    compile_policies,
    compile_policy,
    decide,
)
from transforms.records import new_record

CATEGORIES = {"child", "nudity", "face", "medical_clinical", "medical_scan", "id_document"}
MATCH_KINDS = {"url", "url_sha256", "md5", "sha256", "pdq", "phash", "clip"}
KNOWN = CATEGORIES | set(CAPTION_FLAGS) | MATCH_KINDS


def record(labels=(), flags=(), scores=None, matches=(), status="ok") -> dict:
    rec = new_record("part-0:0", "http://example.com/a.jpg", "a caption")
    rec.update(
        labels=list(labels), caption_flags=list(flags), scores=scores, matches=list(matches),
        status=status,
    )
    return rec


def holds(expr: str, rec: dict) -> bool:
    return compile_policy(expr, KNOWN).evaluate(rec)


def match(list_id="takedown-a", kind="pdq", entry_id="e1", distance=3.0) -> dict:
    return {"list_id": list_id, "entry_id": entry_id, "kind": kind, "distance": distance}


# --------------------------------------------------------------------------- booleans

def test_names_are_true_from_labels_or_caption_flags():
    assert holds("nudity", record(labels=["nudity"]))
    assert holds("name_with_medical_term", record(flags=["name_with_medical_term"]))
    assert not holds("nudity", record(labels=["face"], flags=["email"]))
    assert not holds("nudity", {"labels": None, "caption_flags": None})
    assert not holds("nudity", {})


def test_the_brief_examples():
    assert holds("child and nudity", record(labels=["child", "nudity"]))
    assert not holds("child and nudity", record(labels=["child"]))
    assert holds("medical_clinical and face", record(labels=["face", "medical_clinical"]))
    assert holds("not face", record(labels=["nudity"]))
    assert not holds("not face", record(labels=["face"]))
    expr = "(medical_scan or medical_clinical) and name_with_medical_term"
    assert holds(expr, record(labels=["medical_scan"], flags=["name_with_medical_term"]))
    assert holds(expr, record(labels=["medical_clinical"], flags=["name_with_medical_term"]))
    assert not holds(expr, record(labels=["medical_scan"]))
    assert not holds(expr, record(flags=["name_with_medical_term"]))


# Each expression with the Python function it must agree with on every assignment.
TRUTH_TABLE = [
    ("child and nudity", lambda a, b, c: a and b),
    ("child or nudity", lambda a, b, c: a or b),
    ("not child", lambda a, b, c: not a),
    ("not not child", lambda a, b, c: a),
    # not binds tighter than and, and tighter than or
    ("not child and nudity", lambda a, b, c: (not a) and b),
    ("not child or nudity", lambda a, b, c: (not a) or b),
    ("child or nudity and face", lambda a, b, c: a or (b and c)),
    ("child and nudity or face", lambda a, b, c: (a and b) or c),
    ("child or not nudity and face", lambda a, b, c: a or ((not b) and c)),
    # parentheses override
    ("(child or nudity) and face", lambda a, b, c: (a or b) and c),
    ("not (child and nudity)", lambda a, b, c: not (a and b)),
    ("not (child or nudity) or face", lambda a, b, c: (not (a or b)) or c),
    ("((child))", lambda a, b, c: a),
    ("child and (nudity or (face and not child))", lambda a, b, c: a and (b or (c and not a))),
    ("child or nudity or face", lambda a, b, c: a or b or c),
    ("child and nudity and face", lambda a, b, c: a and b and c),
]


@pytest.mark.parametrize("expr, expected", TRUTH_TABLE, ids=[e for e, _ in TRUTH_TABLE])
def test_operators_and_precedence(expr, expected):
    policy = compile_policy(expr, KNOWN)
    for a, b, c in itertools.product([False, True], repeat=3):
        labels = [name for name, on in (("child", a), ("nudity", b), ("face", c)) if on]
        assert policy.evaluate(record(labels=labels)) == expected(a, b, c), (labels, expr)


def test_whitespace_and_newlines_do_not_matter():
    expr = "  child\n  and\t(nudity\n or face)  "
    assert holds(expr, record(labels=["child", "face"]))


# --------------------------------------------------------------------------- comparisons

@pytest.mark.parametrize("op, below, at, above", [
    (">", False, False, True),
    (">=", False, True, True),
    ("<", True, False, False),
    ("<=", True, True, False),
    ("==", False, True, False),
    ("!=", True, False, True),
])
def test_score_comparisons(op, below, at, above):
    policy = compile_policy(f"scores.nudity {op} 0.5", KNOWN)
    assert policy.evaluate(record(scores={"nudity": 0.25})) is below
    assert policy.evaluate(record(scores={"nudity": 0.5})) is at
    assert policy.evaluate(record(scores={"nudity": 0.75})) is above


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_a_literal_on_the_left_flips_the_comparison(op):
    left = compile_policy(f"0.5 {op} scores.nudity", KNOWN)
    flipped = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}[op]
    right = compile_policy(f"scores.nudity {flipped} 0.5", KNOWN)
    for value in (0.25, 0.5, 0.75):
        rec = record(scores={"nudity": value})
        assert left.evaluate(rec) == right.evaluate(rec)


@pytest.mark.parametrize("literal, value, expected", [
    ("1", 1.0, True), ("1.0", 1.0, True), (".5", 0.5, True), ("5e-1", 0.5, True),
    ("+0.5", 0.5, True), ("-0.5", -0.5, True), ("1_000", 1000.0, True), ("0.5", 0.25, False),
])
def test_number_literals(literal, value, expected):
    assert holds(f"scores.nudity == {literal}", record(scores={"nudity": value})) is expected


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
@pytest.mark.parametrize("scores", [None, {}, {"face": 0.9}, {"nudity": None},
                                    {"nudity": float("nan")}, {"nudity": "high"}])
def test_missing_scores_make_every_comparison_false(op, scores):
    assert not holds(f"scores.nudity {op} 0.5", record(scores=scores, status="timeout"))


def test_scores_in_their_written_form_are_read_too():
    # audit_row() turns the scores map into (category, score) pairs for Arrow.
    rec = record(scores=[("face", 0.1), ("nudity", 0.95)])
    assert holds("scores.nudity > 0.9", rec)
    assert not holds("scores.face > 0.9", rec)


def test_comparisons_combine_with_booleans():
    expr = "child and scores.nudity > 0.3 or scores.nudity >= 0.9"
    assert holds(expr, record(labels=["child"], scores={"nudity": 0.4}))
    assert not holds(expr, record(labels=[], scores={"nudity": 0.4}))
    assert holds(expr, record(labels=[], scores={"nudity": 0.9}))
    assert holds("not scores.nudity > 0.9", record(scores={}))


def test_status_comparisons():
    assert holds('status == "ok"', record(status="ok"))
    assert not holds('status == "ok"', record(status="timeout"))
    assert holds("status != 'ok'", record(status="timeout"))
    assert holds('"timeout" == status', record(status="timeout"))
    assert not holds('status != "ok"', {"status": None})
    assert not holds('status == "ok"', {})


# --------------------------------------------------------------------------- matches

def test_match_and_takedown_are_any_match():
    for expr in ("match", "takedown"):
        assert holds(expr, record(matches=[match(kind="md5")]))
        assert not holds(expr, record(matches=[]))
        assert not holds(expr, {"matches": None})


def test_match_kind():
    rec = record(matches=[match(kind="md5"), match(kind="phash")])
    assert holds("match.md5", rec)
    assert holds("match.phash and not match.pdq", rec)
    assert not holds("match.pdq", rec)
    assert holds("match.pdq", record(matches=[match(kind="pdq")]))
    assert not holds("match.pdq", record(matches=[]))


# --------------------------------------------------------------------------- errors

def error_of(expr: str, known=KNOWN, where="policy") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        compile_policy(expr, known, where)
    return info.value


def caret_column(err: PolicyError) -> int:
    lines = str(err).splitlines()
    assert lines[1] == "  " + err.expr.replace("\n", " ").replace("\t", " ")
    assert set(lines[2].strip()) == {"^"}
    return lines[2].index("^") - 2


def test_unknown_name_points_at_it():
    err = error_of("child and nuditty", where="policy.remove_if")
    assert isinstance(err, ValueError)
    lines = str(err).splitlines()
    assert lines[0].startswith("policy.remove_if: unknown name 'nuditty'")
    assert "did you mean 'nudity'" in lines[0]
    assert "child" in lines[0] and "face" in lines[0]  # the known names are listed
    assert caret_column(err) == err.column == len("child and ")
    assert err.one_line() == (
        f"child and nuditty: {err.message} at column {len('child and ') + 1}"
    )
    assert "\n" not in err.one_line()


@pytest.mark.parametrize("expr, column, words", [
    ("scores.nuditty > 0.5", len("scores."), "unknown category 'nuditty'"),
    ("match.pdqq", len("match."), "unknown match kind 'pdqq'"),
    ("labels.child", 0, "unknown name 'labels.child'"),
    ("child AND nudity", len("child "), "lower case"),
    ("child and Nudity", len("child and "), "unknown name 'Nudity'"),
])
def test_unknown_names_in_every_position(expr, column, words):
    err = error_of(expr)
    assert words in err.message
    assert caret_column(err) == column


@pytest.mark.parametrize("expr, column, words", [
    # unbalanced parentheses
    ("(child or nudity", 0, "'(' is never closed"),
    ("child and ((nudity)", len("child and "), "'(' is never closed"),
    ("child or nudity)", len("child or nudity"), "unmatched ')'"),
    ("(child) )", len("(child) "), "unmatched ')'"),
    ("()", 1, "inside '()'"),
    ("(child nudity)", len("(child "), "expected ')', 'and' or 'or'"),
    # trailing and dangling operators
    ("child and", len("child and"), "after 'and'"),
    ("child or ", len("child or "), "after 'or'"),
    ("not", len("not"), "after 'not'"),
    ("child and not", len("child and not"), "after 'not'"),
    ("and child", 0, "before 'and'"),
    ("child and or nudity", len("child and "), "before 'or'"),
    ("child nudity", len("child "), "expected 'and' or 'or' before 'nudity'"),
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    # bad literals and comparisons
    ("scores.nudity > 0.9.1", len("scores.nudity > "), "bad number '0.9.1'"),
    ("scores.nudity > 1e", len("scores.nudity > "), "bad number '1e'"),
    ("scores.nudity > 9x", len("scores.nudity > "), "bad number '9x'"),
    ("scores.nudity > inf", len("scores.nudity > "), "expected a number"),
    ("scores.nudity > 1e999", len("scores.nudity > "), "bad number"),
    ("scores.nudity > 'high'", len("scores.nudity > "), "expected a number"),
    ("scores.nudity >", len("scores.nudity >"), "expected a number"),
    ("scores.nudity", 0, "compare it"),
    ("scores.nudity and child", len("scores.nudity "), "compare it"),
    ("scores > 0.5", 0, "expected scores.<category>"),
    ("0.5 < scores.nudity < 0.9", len("0.5 < scores.nudity "), "do not chain"),
    ("0.5", 0, "not a condition"),
    ("0.5 > child", len("0.5 > "), "expected scores.<category> or status"),
    ("child > 0.5", len("child "), "'child' is a condition"),
    ("status == ok", len("status == "), "quoted status"),
    ("status == 1", len("status == "), "quoted status"),
    ('status > "ok"', 0, "only with == and !="),
    ('status == "okay"', len("status == "), "unknown status 'okay'"),
    ('status == "ok', len("status == "), "never closed"),
    # characters outside the grammar
    ("child = nudity", len("child "), "use '=='"),
    ("child & nudity", len("child "), "use 'and'"),
    ("child || nudity", len("child "), "use 'or'"),
    ("!child", 0, "use 'not'"),
    ("__import__('os')", 0, "unknown name '__import__'"),
    ("child __import__", len("child "), "expected 'and' or 'or'"),
    ("(child OR face)", len("(child "), "lower case"),
])
def test_syntax_errors_point_at_the_column(expr, column, words):
    err = error_of(expr)
    assert words in err.message, err.message
    assert err.column == column
    assert caret_column(err) == column
    assert err.one_line().endswith(f" at column {column + 1}")


def test_errors_pickle_with_their_position():
    err = pickle.loads(pickle.dumps(error_of("child and nuditty")))
    assert (err.column, err.expr) == (10, "child and nuditty")
    assert str(err) == str(error_of("child and nuditty"))


def test_the_caret_stays_aligned_with_tabs_and_newlines():
    err = error_of("child\n\tand nuditty")
    assert caret_column(err) == len("child\n\tand ")


def test_a_non_string_expression_is_a_policy_error():
    assert "expected an expression string" in error_of(0.9).message


def test_compile_policies_names_each_entry():
    policies = compile_policies(["child and nudity", "face"], KNOWN, "policy.review_if")
    assert [p.expr for p in policies] == ["child and nudity", "face"]
    with pytest.raises(PolicyError) as info:
        compile_policies(["face", "nuditty"], KNOWN, "policy.review_if")
    assert str(info.value).startswith("policy.review_if[1]: unknown name 'nuditty'")


# --------------------------------------------------------------------------- Policy object

def test_names_used_lists_known_names_referenced():
    policy = compile_policy(
        "(child or match.pdq) and scores.nudity > 0.5 and not email or takedown "
        "or status != 'ok'",
        KNOWN,
    )
    assert policy.names_used == {"child", "pdq", "nudity", "email"}
    assert compile_policy("match", KNOWN).names_used == frozenset()


def test_policies_survive_pickling_as_beam_ships_them():
    policy = compile_policy("child and scores.nudity > 0.5", KNOWN, "policy.remove_if[0]")
    copy_ = pickle.loads(pickle.dumps(policy))
    assert isinstance(copy_, Policy) and copy_ == policy
    assert copy_.where == "policy.remove_if[0]" and copy_.names_used == policy.names_used
    for rec in (record(labels=["child"], scores={"nudity": 0.7}), record(labels=["child"])):
        assert copy_.evaluate(rec) == policy.evaluate(rec)


# --------------------------------------------------------------------------- decide

REMOVE = compile_policies(["child and nudity", "medical_scan and name_with_medical_term"],
                          KNOWN, "policy.remove_if")
REVIEW = compile_policies(["nudity", "scores.face > 0.8"], KNOWN, "policy.review_if")


def test_keep_when_nothing_holds():
    assert decide(record(labels=["face"], scores={"face": 0.2}), REMOVE, REVIEW) == ("keep", [])


def test_review_lists_every_review_policy_that_holds():
    rec = record(labels=["nudity"], scores={"face": 0.9})
    assert decide(rec, REMOVE, REVIEW) == (
        "review", ["policy:nudity", "policy:scores.face > 0.8"]
    )


def test_remove_policies_win_over_review_and_list_in_config_order():
    rec = record(labels=["child", "nudity", "medical_scan"], flags=["name_with_medical_term"])
    action, reasons = decide(rec, REMOVE, REVIEW)
    assert action == "remove"
    assert reasons == ["policy:child and nudity",
                       "policy:medical_scan and name_with_medical_term"]


def test_takedown_matches_remove_with_one_reason_per_list_first():
    rec = record(
        labels=["child", "nudity"],
        matches=[match("list-b", "md5"), match("list-a", "pdq"), match("list-b", "pdq")],
    )
    action, reasons = decide(rec, REMOVE, REVIEW)
    assert action == "remove"
    assert reasons == ["takedown:list-a", "takedown:list-b", "policy:child and nudity"]
    assert decide(record(matches=[match("request-42")]), [], []) == (
        "remove", ["takedown:request-42"]
    )


def test_reasons_show_the_expression_on_one_line():
    policy = compile_policy("child\n  and   nudity", KNOWN)
    assert decide(record(labels=["child", "nudity"]), [policy], []) == (
        "remove", ["policy:child and nudity"]
    )


def test_failed_rows_with_no_data_are_kept_and_not_changed():
    rec = record(status="timeout")
    rec.update(scores=None, labels=None, caption_flags=None, matches=None)
    before = copy.deepcopy(rec)
    remove = compile_policies(["scores.nudity > 0.9", "not face and scores.face < 0.1"], KNOWN)
    assert decide(rec, remove, [compile_policy("scores.nudity != 0.5", KNOWN)]) == ("keep", [])
    assert rec == before


def test_a_failed_fetch_still_honours_a_url_takedown():
    rec = record(status="timeout", matches=[match("urls", "url")])
    assert decide(rec, REMOVE, REVIEW) == ("remove", ["takedown:urls"])
