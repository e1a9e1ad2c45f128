"""The price table: format checks, the price in effect on a date, and exact costs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pipelines.local.loadgen import MODELS
from transforms.pricing.table import (
    DEFAULT_PRICE_TABLE,
    ModelPrice,
    estimate_cost_usd,
    load_price_table,
    parse_price_table,
    price_on,
)

TABLE = """
version: "2026-03"
currency: USD
models:
  model-a:
    - {effective_from: 2026-03-01, prompt_per_1k: 0.001, completion_per_1k: 0.004}
    - {effective_from: 2026-01-01, prompt_per_1k: 0.002, completion_per_1k: 0.008}
  model-b:
    - {effective_from: "2026-02-15", prompt_per_1k: "0.0000375", completion_per_1k: 0}
"""


def test_price_in_effect_is_the_latest_on_or_before_the_date():
    table = parse_price_table(TABLE)
    assert table.version == "2026-03"
    assert [e.effective_from for e in table.models["model-a"]] == [
        dt.date(2026, 1, 1),
        dt.date(2026, 3, 1),
    ]
    assert price_on(table, "model-a", dt.date(2025, 12, 31)) is None
    assert price_on(table, "model-a", dt.date(2026, 1, 1)).prompt_per_1k == Decimal("0.002")
    assert price_on(table, "model-a", dt.date(2026, 2, 28)).completion_per_1k == Decimal("0.008")
    assert price_on(table, "model-a", dt.date(2026, 3, 1)) == ModelPrice(
        dt.date(2026, 3, 1), Decimal("0.001"), Decimal("0.004")
    )
    assert price_on(table, "model-b", dt.date(2026, 2, 15)).prompt_per_1k == Decimal("0.0000375")
    assert price_on(table, "unknown-model", dt.date(2026, 3, 1)) is None


def test_costs_are_exact_to_the_nano_dollar():
    march = price_on(parse_price_table(TABLE), "model-a", dt.date(2026, 3, 2))
    # (1234 * 0.001 + (567 + 89) * 0.004) / 1000 = 0.003858
    assert estimate_cost_usd(march, 1234, 567, 89) == 0.003858
    assert estimate_cost_usd(march, 0, 0, 0) == 0.0
    cheap = price_on(parse_price_table(TABLE), "model-b", dt.date(2026, 3, 2))
    # 1 * 0.0000375 / 1000 = 3.75e-8 -> 3.8e-8 (half-even at 1e-9: 37.5 -> 38)
    assert estimate_cost_usd(cheap, 1, 1000, 0) == 3.8e-8
    assert estimate_cost_usd(cheap, 3, 0, 0) == 1.12e-7  # 112.5 -> 112 (half-even)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: x\ncurrency: USD\n", "exactly the keys"),
        ("version: ''\ncurrency: USD\nmodels: {m: []}\n", "version must be a non-empty"),
        ("version: x\ncurrency: EUR\nmodels: {m: []}\n", "currency must be USD"),
        ("version: x\ncurrency: USD\nmodels: {}\n", "non-empty mapping"),
        ("version: x\ncurrency: USD\nmodels: {m: []}\n", "non-empty list"),
        (
            "version: x\ncurrency: USD\nmodels: {m: [{effective_from: 2026-01-01, "
            "prompt_per_1k: 1}]}\n",
            "exactly the keys",
        ),
        (
            "version: x\ncurrency: USD\nmodels: {m: [{effective_from: 2026-01-01, "
            "prompt_per_1k: -1, completion_per_1k: 1}]}\n",
            ">= 0",
        ),
        (
            "version: x\ncurrency: USD\nmodels: {m: [{effective_from: 2026-01-01, "
            "prompt_per_1k: cheap, completion_per_1k: 1}]}\n",
            "must be a number",
        ),
        (
            "version: x\ncurrency: USD\nmodels: {m: [{effective_from: '2026-13-01', "
            "prompt_per_1k: 1, completion_per_1k: 1}]}\n",
            "must be a date",
        ),
        (
            "version: x\ncurrency: USD\nmodels: {m: [{effective_from: 2026-13-01, "
            "prompt_per_1k: 1, completion_per_1k: 1}]}\n",
            "not valid YAML",
        ),
        ("version: [x\n", "not valid YAML"),
        (
            "version: x\ncurrency: USD\nmodels: {m: ["
            "{effective_from: 2026-01-01, prompt_per_1k: 1, completion_per_1k: 1}, "
            "{effective_from: 2026-01-01, prompt_per_1k: 2, completion_per_1k: 2}]}\n",
            "two prices on one effective_from",
        ),
    ],
)
def test_malformed_tables_are_rejected_with_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_price_table(text)


def test_packaged_table_prices_every_model_of_the_synthetic_traffic():
    table = load_price_table(DEFAULT_PRICE_TABLE)
    today = dt.datetime.now(dt.UTC).date()
    for model in MODELS:
        price = price_on(table, model, today)
        assert price is not None, model
        # Unsplit tokens are priced at the completion rate: an upper bound only if it is higher.
        assert price.completion_per_1k >= price.prompt_per_1k, model


def test_a_file_path_loads_and_a_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(TABLE)
    assert load_price_table(str(path)).version == "2026-03"
    with pytest.raises(ValueError, match="cannot read it"):
        load_price_table(str(tmp_path / "missing.yaml"))
