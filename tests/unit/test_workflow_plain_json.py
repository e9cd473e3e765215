"""The JSON fast path reads exactly what the YAML path reads, or leaves the document to it."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from maestro.workflow import WorkflowError, builtin_workflow_names, builtin_workflow_yaml
from maestro.workflow.limits import MAX_ECHO_CHARS, MAX_STRING_CHARS, MAX_YAML_DEPTH, MAX_YAML_NODES
from maestro.workflow.loader import _load_yaml, parse_workflow_yaml
from maestro.workflow.plain_json import load_plain_json

_YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def as_json(data: object, **options: object) -> str:
    return json.dumps(data, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", builtin_workflow_names())
def test_every_builtin_workflow_as_json_reads_as_its_yaml_does(name):
    data = yaml.load(builtin_workflow_yaml(name), Loader=_YAML)
    for text in (as_json(data), as_json(data, indent=2), as_json(data, ensure_ascii=True)):
        assert load_plain_json(text) == data
        assert yaml.load(text, Loader=_YAML) == data
        assert parse_workflow_yaml(text) == parse_workflow_yaml(builtin_workflow_yaml(name))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1.5, "b": -0.25, "c": 2.0e+3, "d": 7.0E-2, "e": -0, "f": 12345678901234567890}',
        '{"s": "tab\\t, quote \\", slash \\/, back \\\\, newline \\n, \\u00e9 \\u2603"}',
        '{"t": true, "f": false, "n": null, "l": [], "m": {}, "nested": [[{"x": [1]}]]}',
        '  \n{"yes": "no", "on": "off", "~": "null", "<<": "merge?"}\n',
        # The longest key the fast path takes, written as long as it can be, with the
        # widest gap it takes: its colon is 1,015 characters from its opening quote.
        '{"' + "\\u0041" * 159 + '"' + " " * 59 + ": 1}",
    ],
)
def test_json_the_fast_path_takes_is_read_exactly_as_yaml_reads_it(text):
    data = load_plain_json(text)
    assert data is not None
    assert data == yaml.load(text, Loader=_YAML)
    # Same types too (1.5 vs "1.5", 0 vs 0.0, True vs "true").
    assert as_json(data) == as_json(yaml.load(text, Loader=_YAML))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"a": 1e3}', "YAML 1.1 reads 1e3 as a string"),
        ('{"a": 1.5e3}', "an exponent without a sign is a string in YAML 1.1"),
        ('{"a": NaN}', "not JSON, and a string in YAML"),
        ('{"a": -Infinity}', "not JSON, and a string in YAML"),
        ('{"a": 1, "a": 2}', "JSON keeps the last; the YAML path refuses the repeat"),
        ('{"a": "\\ud83d\\ude00"}', "JSON joins surrogate pairs; PyYAML does not"),
        ('{"a": "\\uDC00"}', "a lone surrogate"),
        ("[1, 2]", "not a mapping"),
        ("{a: 1}", "YAML flow, not JSON"),
        ('{"a": 1} # comment', "YAML, not JSON"),
        ('{"a": "' + "x" * (MAX_STRING_CHARS + 1) + '"}', "a string over the limit"),
        ('{"' + "k" * (MAX_ECHO_CHARS + 1) + '": 1}', "a key over the limit"),
        ('{"a": ' + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH + "}", "too deep"),
        ('{"a": [' + ",".join(["1"] * MAX_YAML_NODES) + "]}", "too many values"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "deeper than json's recursion"),
        ('{"a": ' + "9" * 5_000 + "}", "an integer longer than Python converts"),
        ('{"a": "x\x85y"}', "NEL: a line break to YAML, folded inside a string"),
        ('{"a": "x \u2028 y"}', "LS: a line break to YAML"),
        ('{"a": "x\u2029y"}', "PS: a line break to YAML"),
        ('{"a": "x\x7fy"}', "DEL: not a character YAML takes raw"),
        ('{"a": "x\x9fy"}', "a C1 control"),
        ('{"a": "x\uffffy"}', "not a character YAML takes"),
        ('{"a"\n: 1}', "a key's colon on the next line"),
        ('{"a"' + " " * 1100 + ": 1}", "a key's colon 1,100 characters away"),
        ('{"' + "\\u0041" * 190 + '": 1}', "190 characters of key, 1,140 written"),
        ('{"' + "k" * 160 + '": 1}', "a key that could be written too long for YAML"),
    ],
)
def test_json_yaml_reads_differently_or_refuses_is_left_to_the_yaml_path(text, why):
    assert load_plain_json(text) is None, why


def test_what_the_fast_path_leaves_to_yaml_is_refused_or_read_differently_there():
    # The cases above that YAML reads at all, it reads otherwise; the rest it refuses.
    folded = yaml.load('{"a": "x\x85y"}', Loader=_YAML)
    assert folded != json.loads('{"a": "x\x85y"}')
    for refused in ('{"a": "x\x7fy"}', '{"a"\n: 1}', '{"a"' + " " * 1100 + ": 1}"):
        with pytest.raises(yaml.YAMLError):
            yaml.load(refused, Loader=_YAML)


def test_documents_left_to_the_yaml_path_get_its_errors():
    with pytest.raises(WorkflowError, match="duplicate key"):
        parse_workflow_yaml('{"name": "x", "name": "y", "steps": []}')
    with pytest.raises(WorkflowError, match=f"more than {MAX_YAML_DEPTH} levels"):
        parse_workflow_yaml('{"name": ' + "[" * 40 + "]" * 40 + "}")
    with pytest.raises(WorkflowError) as caught:
        parse_workflow_yaml(
            '{"name": "x", "steps": [{"id": "a", "persona": "backend_developer", "timeout": 1e3}]}'
        )
    assert caught.value.problems[0].field == "steps[a].timeout"


def test_the_limits_are_the_yaml_paths_at_the_boundary():
    # Exactly at the limits the fast path reads it, one past them it does not.
    deepest = '{"a": ' + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1) + "}"
    assert load_plain_json(deepest) is not None
    yaml.parse(deepest, Loader=_YAML)
    # Values: the mapping, its key, the list, and its items.
    most = '{"a": [' + ",".join(["1"] * (MAX_YAML_NODES - 3)) + "]}"
    assert load_plain_json(most) is not None
    over = '{"a": [' + ",".join(["1"] * (MAX_YAML_NODES - 2)) + "]}"
    assert load_plain_json(over) is None


_TRICKY = [
    "",
    " ",
    "a",
    "é",
    "\t",
    "\n",
    "\x85",
    "\u2028",
    "\x7f",
    "\x9f",
    "\ufeff",
    "\uffff",
    "😀",
    "\\",
    '"',
    ":",
    "1e3",
    "yes",
    "~",
    "<<",
    "#",
    "&a",
    "*a",
    "!!int",
]


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -0, 7, -12, 10**20, 1.5, -0.25, 2.5e-5, 1e300])
    if kind in (2, 3, 4):
        return "".join(rng.choice(_TRICKY) for _ in range(rng.randrange(4)))
    if kind in (5, 6):
        return {
            "".join(rng.choice(_TRICKY) for _ in range(rng.randrange(1, 3))): _random_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(4))
        }
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_random_json_is_read_as_the_yaml_path_reads_it_or_left_to_it():
    # Whatever the fast path takes, the YAML path takes too and builds the same data
    # (same types); what the YAML path refuses, the fast path leaves to it.
    rng = random.Random(6)
    taken = 0
    for _ in range(3_000):
        document = {"name": _random_value(rng, 1), "steps": _random_value(rng, 1)}
        text = json.dumps(
            document,
            ensure_ascii=rng.random() < 0.5,
            indent=rng.choice([None, 1, 2, "\t"]),
        )
        fast = load_plain_json(text)
        try:
            slow = _load_yaml(text, "t")
        except WorkflowError:
            assert fast is None, text
            continue
        if fast is not None:
            taken += 1
            assert json.dumps(fast) == json.dumps(slow), text
    assert taken > 1_000  # the fast path is taken for most documents
