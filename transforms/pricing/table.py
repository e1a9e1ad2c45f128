"""The versioned price table and the estimated cost of a metrics window.

A price table (``transforms/pricing/prices.yaml`` is the packaged one; its header documents the
format) maps a model to prices per 1,000 prompt and completion tokens, each with the UTC date
from which it applies. ``AggregateMetrics`` prices every window from its token sums:

    cost = (prompt_token_sum * prompt_per_1k
            + (completion_token_sum + unsplit_token_sum) * completion_per_1k) / 1000

in exact decimal arithmetic, rounded half-even to 1e-9 USD, with the entry in effect on the
window's UTC start date. ``unsplit_token_sum`` holds the tokens of requests that did not report
both prompt and completion counts; they are priced at the completion rate, which is the higher
one for every model in the packaged table, so such a cost is an upper bound rather than a guess
at the split. A model without an entry on that date gets no cost (None), never a made-up one.

The table is loaded once where the pipeline is built and travels with the transform, so the
workers do not need to read the file.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = [
    "DEFAULT_PRICE_TABLE",
    "ModelPrice",
    "PriceTable",
    "estimate_cost_usd",
    "load_price_table",
    "parse_price_table",
    "price_on",
]

DEFAULT_PRICE_TABLE = "builtin:prices.yaml"
CURRENCY = "USD"
_COST_QUANTUM = Decimal("1e-9")  # USD
_THOUSAND = Decimal(1000)
_TABLE_KEYS = {"version", "currency", "models"}
_ENTRY_KEYS = {"effective_from", "prompt_per_1k", "completion_per_1k"}


class ModelPrice(NamedTuple):
    """One price of one model: USD per 1,000 tokens, from ``effective_from`` (UTC date) on."""

    effective_from: dt.date
    prompt_per_1k: Decimal
    completion_per_1k: Decimal


class PriceTable(NamedTuple):
    """A parsed price table. ``models`` maps a model to its prices, oldest first."""

    version: str
    models: dict[str, tuple[ModelPrice, ...]]


def _read(path: str) -> str:
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        return resources.files("transforms").joinpath("pricing", name).read_text("utf-8")
    if "://" in path:
        # Where the pipeline is launched from a template, the table can sit in a bucket.
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    return Path(path).read_text("utf-8")


def _price(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where} must be a number, got {value!r}")
    try:
        # str() first: a YAML float such as 0.00015 becomes exactly Decimal("0.00015").
        price = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return price


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ValueError(f"{where} must be a date YYYY-MM-DD, got a date and time")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where} must be a date YYYY-MM-DD, got {value!r}") from None


def _entries(model: str, raw: Any, source: str) -> tuple[ModelPrice, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"price table {source}: {model} must have a non-empty list of prices")
    entries = []
    for i, entry in enumerate(raw):
        where = f"price table {source}: {model}[{i}]"
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise ValueError(f"{where} must have exactly the keys {sorted(_ENTRY_KEYS)}")
        entries.append(
            ModelPrice(
                effective_from=_date(entry["effective_from"], f"{where}.effective_from"),
                prompt_per_1k=_price(entry["prompt_per_1k"], f"{where}.prompt_per_1k"),
                completion_per_1k=_price(entry["completion_per_1k"], f"{where}.completion_per_1k"),
            )
        )
    entries.sort(key=lambda e: e.effective_from)
    dates = [e.effective_from for e in entries]
    if len(set(dates)) != len(dates):
        raise ValueError(f"price table {source}: {model} has two prices on one effective_from")
    return tuple(entries)


def parse_price_table(text: str, source: str = "<text>") -> PriceTable:
    """Parses and checks a price table (YAML text). Raises ValueError naming the problem."""
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as error:  # ValueError: a date such as 2026-13-01
        raise ValueError(f"price table {source} is not valid YAML: {error}") from None
    if not isinstance(raw, dict) or set(raw) != _TABLE_KEYS:
        raise ValueError(f"price table {source} must have exactly the keys {sorted(_TABLE_KEYS)}")
    version = raw["version"]
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"price table {source}: version must be a non-empty string")
    if raw["currency"] != CURRENCY:
        raise ValueError(f"price table {source}: currency must be {CURRENCY}")
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise ValueError(f"price table {source}: models must be a non-empty mapping")
    return PriceTable(
        version=version,
        models={
            str(model): _entries(str(model), entries, source) for model, entries in models.items()
        },
    )


def load_price_table(path: str = DEFAULT_PRICE_TABLE) -> PriceTable:
    """Loads a price table: ``builtin:NAME`` (packaged), a local path, or a ``gs://`` object."""
    try:
        text = _read(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"price table {path}: cannot read it ({error})") from None
    return parse_price_table(text, path)


def price_on(table: PriceTable, model: str, day: dt.date) -> ModelPrice | None:
    """The price of ``model`` in effect on ``day`` (UTC), or None when the table has none."""
    current = None
    for entry in table.models.get(model, ()):
        if entry.effective_from > day:
            break
        current = entry
    return current


def estimate_cost_usd(
    price: ModelPrice, prompt_tokens: int, completion_tokens: int, unsplit_tokens: int
) -> float:
    """USD for the token sums at ``price``; unsplit tokens at the completion rate.

    Exact in decimal, rounded half-even to 1e-9 USD, then returned as the nearest float.
    """
    cost = (
        prompt_tokens * price.prompt_per_1k
        + (completion_tokens + unsplit_tokens) * price.completion_per_1k
    ) / _THOUSAND
    return float(cost.quantize(_COST_QUANTUM, rounding=ROUND_HALF_EVEN))
