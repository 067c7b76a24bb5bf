"""What a readable schema-1 record is (docs/results_schema.md), checked in one place.

Every reader of records (`records.store`, hence `reporting.load`) asks `problem` before using a
file's contents, so a JSON array, a record without `key`, or `metrics` that are a list is skipped
with a reason instead of crashing a sweep or a report half-way. The check is structural: the
fields the schema promises, with their types; a promised field may be absent (the reader treats
it as missing) except those a record cannot be placed without. Values are not judged, except
that a metric value that is not finite (inf, nan: Python's json reads `Infinity`, `NaN`) is named
by `nonfinite_metrics`, so readers show it as missing instead of printing `inf`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECORD", "SCHEMA_VERSION", "nonfinite_metrics", "parse", "problem"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class _Field:
    """A field's allowed types; `fields` of a mapping, `each`: the type of every value."""

    types: tuple[type, ...]
    required: bool = False
    fields: Mapping[str, _Field] = field(default_factory=dict)
    each: _Field | None = None
    choices: tuple[str, ...] = ()


_NUM = (int, float)
_NULL = (type(None),)


def _opt(*types: type, **kw: Any) -> _Field:
    return _Field((*types, *_NULL), **kw)


def _req(*types: type, **kw: Any) -> _Field:
    return _Field(types, required=True, **kw)


_METRICS = _req(dict, each=_req(dict, fields={"value": _req(*_NUM, *_NULL),
                                              "stderr": _opt(*_NUM)}))
_SETTINGS = {
    "model": _req(dict, fields={"name": _opt(str), "max_frames_num": _opt(int),
                                "llm": _opt(dict, fields={k: _opt(int) for k in
                                                          ("layers", "hidden", "ffn")})}),
    "compressor": _req(dict, fields={"name": _req(str), "params": _opt(dict)}),
    "retention": _opt(*_NUM), "task": _opt(str), "limit": _opt(*_NUM), "seed": _opt(int),
}
RECORD: Mapping[str, _Field] = {
    "schema_version": _req(int),
    "key": _req(str),
    "source": _req(str, choices=("ours", "paper")),
    "status": _req(str, choices=("finished", "failed")),
    "error": _opt(str),
    "settings": _req(dict, fields=_SETTINGS),
    "versions": _opt(dict),
    "started_at": _opt(str), "finished_at": _opt(str), "duration_s": _opt(*_NUM),
    "metrics": _METRICS,
    "subtasks": _opt(dict, each=_METRICS),
    "samples": _opt(dict, fields={"count": _opt(int), "failed": _opt(int),
                                  "failures": _opt(list)}),
    "retention": _opt(dict, fields={k: _opt(*_NUM) for k in ("target", "mean", "min", "max")}),
    "tokens": _opt(dict, fields={"visual_mean": _opt(*_NUM), "fed_mean": _opt(*_NUM)}),
    "flops": _opt(dict, fields={"prefill_mean": _opt(*_NUM), "prefill_ratio_mean": _opt(*_NUM),
                                "convention": _opt(str)}),
    "timings": _opt(dict, each=_opt(*_NUM)),
    "peak_memory_bytes": _opt(*_NUM),
    "resolved": _opt(dict),
}
"""The fields docs/results_schema.md promises and their types; required ones must be there."""


def parse(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for the bytes of a readable schema-1 record, else (None, why not)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte {err.start})"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as err:
        return None, f"not JSON ({str(err).splitlines()[0][:80]})"
    why = problem(record)
    return (None, why) if why else (record, None)


def problem(record: Any) -> str | None:
    """Why `record` is not a schema-1 record (the first problem found), or None if it is."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_kind(record)}"
    version = record.get("schema_version")
    if "schema_version" in record and version != SCHEMA_VERSION:
        return f"schema_version {version!r}, not {SCHEMA_VERSION}"
    why = _mapping_problem(record, RECORD, "")
    if why is None and not record["key"]:
        return "`key` is empty"
    return why


def _mapping_problem(mapping: Mapping[str, Any], fields: Mapping[str, _Field],
                     where: str) -> str | None:
    for name, spec in fields.items():
        path = f"{where}{name}"
        if name not in mapping:
            if spec.required:
                return f"no `{path}`"
            continue
        why = _value_problem(mapping[name], spec, path)
        if why:
            return why
    return None


def _value_problem(value: Any, spec: _Field, path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, spec.types):  # JSON true is no number
        return f"`{path}` is {_kind(value)}, not {_names(spec.types)}"
    if spec.choices and value not in spec.choices:
        return f"`{path}` is {value!r}, not one of {list(spec.choices)}"
    if not isinstance(value, dict):
        return None
    why = _mapping_problem(value, spec.fields, f"{path}.")
    if why or spec.each is None:
        return why
    for name, item in value.items():
        why = _value_problem(item, spec.each, f"{path}.{name}")
        if why:
            return why
    return None


_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
          type(None): "null", int: "a number", float: "a number"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_KINDS[t] for t in types))


def nonfinite_metrics(record: Mapping[str, Any]) -> list[str]:
    """Names of `record`'s metrics whose value or stderr is inf, -inf or nan."""
    metrics = record.get("metrics")
    return [name for name, metric in (metrics.items() if isinstance(metrics, Mapping) else ())
            if isinstance(metric, Mapping) and any(
                isinstance(v, float) and not math.isfinite(v)
                for v in (metric.get("value"), metric.get("stderr")))]
