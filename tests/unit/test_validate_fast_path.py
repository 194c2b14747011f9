"""The compiled validity check agrees with the full validator on valid params and on every single mutation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.model import Shape
from shape_values import generate, union_sizes

from openhi.awsapi.service import load_service_model
from openhi.awsapi.validate import _passes, _Validator

MODEL = load_service_model()
OPERATIONS = sorted(MODEL.operation_names)


def _errors(shape: Shape, params: Any) -> list[str]:
    validator = _Validator()
    validator.structure(shape, params, "", False)
    return validator.errors


def _bad_values(shape: Shape, value: Any) -> Iterator[Any]:
    """Values that break one constraint of ``shape`` (and a few that break none: the check must agree)."""
    meta = shape.metadata
    low, high = meta.get("min"), meta.get("max")
    if shape.type_name == "string":
        if meta.get("enum"):
            yield "NOT_AN_ENUM_VALUE"
        if high is not None:
            yield "a" * (high + 1)
        if low:
            yield ""
        if meta.get("pattern"):
            yield value + "\n"
            yield "\x00" + value
        yield 42  # wrong type: the parser's business, both let it pass
    elif shape.type_name in ("integer", "long", "float", "double"):
        if low is not None:
            yield low - 1
        if high is not None:
            yield high + 1
        yield True  # a bool is not a number here
    elif shape.type_name == "list":
        if high is not None:
            yield value * (high + 1)
        yield [None, *value]
        yield []
    elif shape.type_name == "map":
        yield {**value, "": None}
        yield {}
    elif shape.type_name == "blob":
        if high is not None:
            yield b"x" * (high + 1)
        yield b""
    elif shape.type_name == "structure":
        yield {**value, "NoSuchMember": 1}
        for name in shape.required_members:
            yield {k: v for k, v in value.items() if k != name}
        if meta.get("union"):
            yield {}
            yield {name: generate(member) for name, member in shape.members.items()}


def _mutations(shape: Shape, value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, replacement) for every node of a generated value."""
    for bad in _bad_values(shape, value):
        yield path, bad
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            yield from _mutations(shape.members[name], item, (*path, name))
    elif shape.type_name == "list" and isinstance(value, list) and value:
        yield from _mutations(shape.member, value[0], (*path, 0))
    elif shape.type_name == "map" and isinstance(value, dict) and value:
        key = next(iter(value))
        yield from _mutations(shape.value, value[key], (*path, key))


def _replace(params: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    if not path:
        return new  # type: ignore[no-any-return]
    out = copy.deepcopy(params)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return out


CASES = [
    (name, variant)
    for name in OPERATIONS
    for variant in range(union_sizes(MODEL.operation_model(name).input_shape))
]


@pytest.mark.parametrize(("op_name", "variant"), CASES)
def test_valid_params_take_the_compiled_check_and_every_mutation_agrees(op_name: str, variant: int) -> None:
    shape = MODEL.operation_model(op_name).input_shape
    params = generate(shape, variant)
    assert _errors(shape, params) == []
    assert _passes(shape)(params) is True
    rejected = 0
    for path, bad in _mutations(shape, params):
        mutated = _replace(params, path, bad)
        errors = _errors(shape, mutated)
        assert _passes(shape)(mutated) is (not errors), (op_name, path, bad, errors)
        rejected += bool(errors)
    assert rejected > 0  # the mutations do break constraints
