"""Runtime catalog entries: declared args that must fit their own type and bounds, and
argv/env templates whose placeholders must all be known."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hive.model.runtimes import (
    BUILT_IN_PLACEHOLDERS,
    ArgSpec,
    ArgValue,
    RuntimeEntry,
    arg_problem,
    placeholders,
)

INT_0_10 = ArgSpec(type="int", default=1, min=0, max=10)
FLOAT_0_1 = ArgSpec(type="float", default=0.5, min=0, max=1)
STR_MODE = ArgSpec(type="str", default="fast", choices=("fast", "slow"))
BOOL = ArgSpec(type="bool", default=False)
INT_ANY = ArgSpec(type="int", default=0)


# -- arg_problem ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "value", "problem"),
    [
        (INT_0_10, 3, None),
        (INT_0_10, 0, None),  # bounds are inclusive
        (INT_0_10, 10, None),
        (INT_0_10, -1, "is below the minimum 0"),
        (INT_0_10, 11, "is above the maximum 10"),
        (INT_0_10, True, "is a boolean; expected int"),  # bool is an int to Python, not here
        (INT_0_10, False, "is a boolean; expected int"),
        (INT_0_10, 3.0, "is float; expected int"),
        (INT_0_10, "3", "is str; expected int"),
        (FLOAT_0_1, 0.25, None),
        (FLOAT_0_1, 1, None),  # an int is a fine float
        (FLOAT_0_1, 1.5, "is above the maximum 1"),
        (FLOAT_0_1, -0.1, "is below the minimum 0"),
        (FLOAT_0_1, True, "is a boolean; expected float"),
        (FLOAT_0_1, "0.5", "is str; expected float"),
        (STR_MODE, "slow", None),
        (STR_MODE, "medium", "is not one of fast, slow"),
        (STR_MODE, 1, "is int; expected str"),
        (BOOL, True, None),
        (BOOL, False, None),
        (BOOL, 1, "is int; expected bool"),
        (BOOL, "true", "is str; expected bool"),
        (INT_ANY, -(10**12), None),  # no bounds declared: any int
        (INT_ANY, 10**12, None),
    ],
)
def test_arg_problem(spec: ArgSpec, value: ArgValue, problem: str | None) -> None:
    assert arg_problem(spec, value) == problem


@given(
    low=st.integers(-1000, 1000),
    span=st.integers(0, 1000),
    value=st.integers(-3000, 3000),
)
def test_an_int_fits_exactly_when_it_lies_within_the_bounds(
    low: int, span: int, value: int
) -> None:
    spec = ArgSpec(type="int", default=low, min=low, max=low + span)
    problem = arg_problem(spec, value)
    if low <= value <= low + span:
        assert problem is None
    else:
        assert problem is not None
        assert ("below the minimum" if value < low else "above the maximum") in problem


def test_nan_does_not_fit_a_bounded_float() -> None:
    assert arg_problem(FLOAT_0_1, math.nan) is not None


def test_a_bool_arg_may_list_the_choices_it_renders_as() -> None:
    spec = ArgSpec(type="bool", default=True, choices=("true", "false"))
    assert arg_problem(spec, False) is None


# -- ArgSpec: its default must fit ------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "int", "default": 20, "max": 10}, "default 20 is above the maximum 10"),
        ({"type": "int", "default": -1, "min": 0}, "default -1 is below the minimum 0"),
        ({"type": "int", "default": 1.5}, "default 1.5 is float; expected int"),
        ({"type": "int", "default": True}, "default True is a boolean; expected int"),
        ({"type": "float", "default": "x"}, "default 'x' is str; expected float"),
        ({"type": "bool", "default": 0}, "default 0 is int; expected bool"),
        (
            {"type": "str", "default": "a", "choices": ["b", "c"]},
            "default 'a' is not one of b, c",
        ),
    ],
)
def test_an_arg_default_that_does_not_fit_is_rejected(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ArgSpec.model_validate(fields)


def test_an_arg_default_that_fits_is_kept() -> None:
    spec = ArgSpec.model_validate({"type": "float", "default": 2, "min": 0, "max": 2})
    assert spec.default == 2
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ArgSpec.model_validate({"type": "int", "default": 1, "maximum": 3})


# -- placeholders ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("plain", []),
        ("{port}", ["port"]),
        ("--model={model_path}", ["model_path"]),
        ("{host}:{port}", ["host", "port"]),
        ("{{literal}}", []),
        ("{{{port}}}", ["port"]),
        ("{port!r:>6}", ["port"]),
        ("", []),
    ],
)
def test_placeholders(template: str, names: list[str]) -> None:
    assert placeholders(template) == names


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{", "Single '{' encountered in format string"),
        ("}", "Single '}' encountered in format string"),
        ("a}b", "Single '}' encountered in format string"),
        ("{port", "expected '}' before end of string"),
    ],
)
def test_a_malformed_template_is_a_value_error(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        placeholders(template)


# -- RuntimeEntry ---------------------------------------------------------------------------
def test_an_entry_may_use_every_built_in_placeholder_and_its_declared_args() -> None:
    argv = ("{binary}", *(f"--{name}={{{name}}}" for name in sorted(BUILT_IN_PLACEHOLDERS)))
    entry = RuntimeEntry(
        id="full",
        argv=(*argv, "--threads", "{threads}"),
        args={"threads": INT_ANY},
        env={"MODE": "{threads}-{device}"},
    )
    assert entry.argv[-1] == "{threads}"
    assert entry.available


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"argv": ["run", "--x", "{nope}"]},
            r"placeholder \{nope\} in '\{nope\}' is neither hive's \(binary, device, entry_dir, "
            r"host, model, model_path, port, python, queen_url, worker_id\) nor a declared arg",
        ),
        ({"argv": ["run"], "env": {"X": "{nope}"}}, r"placeholder \{nope\}"),
        (
            {"argv": ["run", "{port}"], "args": {"port": {"type": "int", "default": 1}}},
            r"args \['port'\] shadow hive's own placeholders",
        ),
        (
            {"argv": ["run"], "args": {"model": {"type": "str", "default": "m"}}},
            r"args \['model'\] shadow",
        ),
        ({"argv": ["run", "{port"]}, "expected '}'"),
        ({"argv": []}, "at least 1 item"),
        ({"argv": ["run"], "id": "Not_A_Name"}, "String should match pattern"),
        ({"argv": ["run"], "health_path": "health"}, "String should match pattern"),
        ({"argv": ["run"], "grace_seconds": 0}, "greater than 0"),
        (
            {"argv": ["run"], "args": {"n": {"type": "int", "default": 9, "max": 1}}},
            "default 9 is above the maximum 1",
        ),
    ],
)
def test_a_bad_entry_is_rejected_with_the_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RuntimeEntry.model_validate({"id": "bad", **fields})


def test_an_entry_from_json_ignores_fields_it_does_not_know() -> None:
    entry = RuntimeEntry.model_validate_json(
        '{"id": "rbee-worker", "argv": ["{binary}"], "build": {"features": ["cuda"]}}'
    )
    assert entry.argv == ("{binary}",)
    assert entry.worker_type == "cpu"


def test_a_placeholder_nested_in_a_format_spec_must_be_known_too() -> None:
    with pytest.raises(ValidationError, match="nope"):
        RuntimeEntry(id="nested", argv=("run", "{port:{nope}}"))
