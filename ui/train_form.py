"""A form for a plain dataclass config: one widget per field, chosen by the field's type, with its help line.

Pages list which fields go in which group and which fields are choices; everything else (labels, help,
defaults, widget kinds) comes from the dataclass itself, so adding an option to ``TrainConfig`` adds it here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, fields
from typing import Any

import streamlit as st


def field_map(cls: type) -> dict[str, Field]:
    return {f.name: f for f in fields(cls)}


def default_of(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]


def widget(
    f: Field,
    value: Any,
    *,
    key: str,
    choices: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    container: Any = st,
) -> Any:
    """One widget for field ``f`` showing ``value``; returns what the user set."""
    label = f.metadata.get("label") or f.name.replace("_", " ").capitalize()
    help_text = f.metadata.get("help")
    if choices is not None:
        options = list(choices) if value in choices else [value, *choices]
        fmt: Callable[[Any], str] = (lambda v: labels.get(v, v)) if labels else str
        return container.selectbox(label, options, index=options.index(value), format_func=fmt, help=help_text,
                                   key=key)  # fmt: skip
    if isinstance(value, bool):
        return container.toggle(label, value=value, help=help_text, key=key)
    if isinstance(value, int):
        return int(container.number_input(label, value=value, min_value=0, step=1, help=help_text, key=key))
    if isinstance(value, float):
        return float(container.number_input(label, value=value, min_value=0.0, format="%g", help=help_text, key=key))
    if isinstance(value, list):
        text = container.text_input(label, value=", ".join(map(str, value)), help=help_text, key=key)
        return [int(part) for part in text.replace(";", ",").split(",") if part.strip().lstrip("-").isdigit()]
    return container.text_input(label, value=str(value), help=help_text, key=key)
