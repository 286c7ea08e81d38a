"""Building blocks of the config: the error type and the base of every section.

Each concept owns its section (`risk/limits.py`, `gateways/venue_config.py`, ...);
`cluster/config.py` assembles them and checks the relations between sections.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from typing import Any, TypeVar

import msgspec

from cluster.messages import Struct

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, naming the key (`strategies[1].symbols`) and what is wrong."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config error at {key}: {problem}")


class Cfg(Struct, forbid_unknown_fields=True):
    """Config sections: frozen, no unknown keys."""


def check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(key, problem)


_AT = re.compile(r" - at `\$\.?(.*)`$")
_SEGMENT = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")


def convert(data: Any, root: type[T], prefix: str = "") -> T:
    """`msgspec.convert` (lenient: ints for floats, strings for enums), a failure a ConfigError naming the key.

    msgspec says `venues[...].latency_ms` for a mapping's entry; the entry is found by converting each one
    alone, so the error says `venues.paper.latency_ms`. An unknown key gets the section's known keys, the
    closest first.
    """
    try:
        return msgspec.convert(data, root, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
    m = _AT.search(msg)
    path, problem = (m.group(1), msg[: m.start()]) if m else ("", msg)
    segments: list[str | int] = []
    node: Any = data
    for name, index in _SEGMENT.findall(path):
        if index == "...":
            name = _failing_entry(data, root, segments, node, msg)
            if name is None:
                segments.append("[...]")
                node = None
                continue
        elif index:
            segments.append(int(index))
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
            continue
        segments.append(name)
        node = node.get(name) if isinstance(node, dict) else None
    key = prefix + "".join(f"[{s}]" if isinstance(s, int) or s == "[...]" else f".{s}" for s in segments).lstrip(".")
    unknown = _UNKNOWN.match(problem)
    if problem.startswith("Invalid enum value"):
        allowed = _literal_values(_type_at(root, segments))
        if allowed:
            problem = f"{problem.rstrip()}; one of: {', '.join(allowed)}"
    if unknown:
        known = _fields_at(root, segments)
        if known:
            close = difflib.get_close_matches(unknown.group(1), known, n=1)
            problem = (f"unknown key {unknown.group(1)!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; known: {', '.join(known)}")
    raise ConfigError(key or prefix.rstrip(".") or "(top level)", problem.rstrip())


def _failing_entry(data: Any, root: type, segments: list[str | int], mapping: Any, msg: str) -> str | None:
    """The key of `mapping` (found at `segments` in `data`) whose entry alone gives the same error."""
    if not isinstance(mapping, dict) or "[...]" in segments:
        return None
    for k in mapping:
        trial = copy.deepcopy(data)
        holder = trial
        for s in segments:
            holder = holder[s]
        holder.clear()
        holder[k] = mapping[k]
        try:
            msgspec.convert(trial, root, strict=False)
        except msgspec.ValidationError as exc:
            if str(exc) == msg:
                return str(k)
    return None


def _type_at(root: type, segments: list[str | int]) -> Any:
    """The declared type at `segments` under `root` (None where the path leaves the declared types)."""
    t: Any = root
    for s in segments:
        t = _optional(t)
        if isinstance(s, str) and s != "[...]" and isinstance(t, type) and issubclass(t, msgspec.Struct):
            t = typing.get_type_hints(t).get(s)
        else:  # an entry of a list or a mapping: its value type
            args = typing.get_args(t)
            t = args[-1] if args else None
    return _optional(t)


def _optional(t: Any) -> Any:
    """X for `X | None`; other types unchanged."""
    while typing.get_origin(t) in (typing.Union, types.UnionType):
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _fields_at(root: type, segments: list[str | int]) -> list[str]:
    """The field names of the Struct type at `segments` under `root` (empty if it is not one)."""
    t = _type_at(root, segments)
    return list(t.__struct_fields__) if isinstance(t, type) and issubclass(t, msgspec.Struct) else []


def _literal_values(t: Any) -> list[str]:
    """The allowed values of a `Literal[...]` type (empty for any other)."""
    return [str(a) for a in typing.get_args(t)] if typing.get_origin(t) is typing.Literal else []
