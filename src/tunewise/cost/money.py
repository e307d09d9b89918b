"""Money for people: the one formatter behind the CLI tables, the decision sentences and the report."""

from __future__ import annotations

import math

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
DASH = "—"  # a figure that was not recorded


def currency_symbol(code: str) -> str:
    """currency_symbol("EUR") == '€'; an unknown code is written out: currency_symbol("CHF") == 'CHF '."""
    return CURRENCY_SYMBOLS.get(code, f"{code} ")


def fmt_money(value: float | None, symbol: str = "$") -> str:
    """Two significant figures below one unit, cents from 1, whole units from 1,000.

    >>> [fmt_money(v) for v in (0, 0.013439, 0.1304, 2.6076, 1234.5)]
    ['$0', '$0.013', '$0.13', '$2.61', '$1,234']
    >>> [fmt_money(v) for v in (None, float("nan"), -0.5, 0.0999, 999.999)]
    ['—', '—', '-$0.50', '$0.10', '$1,000']
    """
    if value is None or not math.isfinite(value):
        return DASH
    if value == 0:
        return f"{symbol}0"
    sign = "-" if value < 0 else ""
    size = abs(value)
    # Round first, then choose the form: 0.0999 is $0.10 (not $0.100) and 999.999 is $1,000.
    if size < 1:
        size = round(size, 1 - math.floor(math.log10(size)))  # two significant figures
        if size < 1:
            return f"{sign}{symbol}{size:.{1 - math.floor(math.log10(size))}f}"
    if round(size, 2) < 1000:
        return f"{sign}{symbol}{size:,.2f}"
    return f"{sign}{symbol}{size:,.0f}"
