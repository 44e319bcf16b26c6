"""Dagster run configs derived from the core's config dataclasses (one config source).

Each stage's settings live once, in a core dataclass (``TrainConfig``, ``EvalConfig``,
``GateConfig``, ``Settings``), with their defaults and a ``help`` text in the field's
metadata. :func:`derive_config` turns selected fields into a ``dg.Config`` (the launchpad
form: same names, types, defaults, descriptions), and :func:`core_values` takes a filled
config back to the keyword arguments of a dataclass. Only what the Dagster layer really
changes (an extra switch such as ``warm_start``, or a field that becomes optional) is
declared here.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterable

import dagster as dg
import pydantic
from pydantic import Field


def _config_type(annotation):
    """Dagster's config system has lists, not tuples: ``tuple[X, ...]`` becomes ``list[X]``."""
    if typing.get_origin(annotation) is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return list[args[0]] if args else list
    return annotation


def config_fields(source: type, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> dict:
    """``{name: (type, Field)}`` for the fields of dataclass ``source`` (all, or ``include``)."""
    hints = typing.get_type_hints(source)
    wanted = None if include is None else list(include)
    by_name = {f.name: f for f in dataclasses.fields(source)}
    if wanted is not None and (missing := set(wanted) - set(by_name)):
        raise ValueError(f"{source.__name__} has no field(s) {sorted(missing)}")
    out = {}
    for name in wanted if wanted is not None else by_name:
        if name in exclude:
            continue
        f = by_name[name]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...  # required
        if isinstance(default, tuple):
            default = list(default)
        out[name] = (_config_type(hints[name]), Field(default=default, description=f.metadata.get("help")))
    return out


def derive_config(name: str, doc: str, *fields: dict, base: type = dg.Config, **overrides) -> type:
    """A ``dg.Config`` subclass named ``name`` with the union of ``fields`` (from
    :func:`config_fields`) and ``overrides`` (``name=(type, Field)``) on top."""
    merged: dict = {}
    for group in fields:
        clash = set(merged) & set(group)
        if clash:
            raise ValueError(f"{name}: field(s) {sorted(clash)} come from two sources")
        merged.update(group)
    merged.update(overrides)
    model = pydantic.create_model(name, __base__=base, __doc__=doc, **merged)
    model.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    return model


def core_values(config: pydantic.BaseModel, target: type, **changes) -> dict:
    """The values of ``config`` that are fields of dataclass ``target`` (lists back to
    tuples where the dataclass holds tuples), updated by ``changes``."""
    names = {f.name for f in dataclasses.fields(target)}
    hints = typing.get_type_hints(target)
    out = {}
    for key, value in config.model_dump().items():
        if key in names:
            is_tuple = typing.get_origin(hints[key]) is tuple
            out[key] = tuple(value) if is_tuple and isinstance(value, list) else value
    out.update(changes)
    return out
