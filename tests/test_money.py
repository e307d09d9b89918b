"""fmt_money: the one money format of the CLI tables, the decision sentences and the report."""

from __future__ import annotations

import pytest

from tunewise.cost.money import currency_symbol, fmt_money


@pytest.mark.parametrize(
    "value, symbol, expected",
    [
        (None, "$", "—"),
        (float("nan"), "$", "—"),
        (float("inf"), "$", "—"),
        (0, "$", "$0"),
        (-0.0, "$", "$0"),
        # below one unit: two significant figures
        (0.0001344, "$", "$0.00013"),
        (0.01344, "$", "$0.013"),
        (0.13038, "$", "$0.13"),
        (0.957, "$", "$0.96"),
        # rounding that crosses a boundary picks the form of the rounded figure
        (0.0999, "$", "$0.10"),
        (0.99996, "$", "$1.00"),
        (999.999, "$", "$1,000"),
        # cents from 1, whole units from 1,000
        (1, "$", "$1.00"),
        (2.6076, "$", "$2.61"),
        (63.45, "$", "$63.45"),
        (999.99, "$", "$999.99"),
        (1234.5, "$", "$1,234"),
        (2_500_000.4, "$", "$2,500,000"),
        # the sign goes before the symbol
        (-0.5, "$", "-$0.50"),
        (-0.0123, "$", "-$0.012"),
        (-1500, "$", "-$1,500"),
        # other currencies
        (0.013, "€", "€0.013"),
        (12.5, "CHF ", "CHF 12.50"),
    ],
)
def test_fmt_money(value, symbol, expected):
    assert fmt_money(value, symbol) == expected


@pytest.mark.parametrize("code, expected", [("USD", "$"), ("EUR", "€"), ("GBP", "£"), ("CHF", "CHF ")])
def test_currency_symbol(code, expected):
    assert currency_symbol(code) == expected
