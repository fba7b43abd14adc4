"""Byte quantities: parsing and human-readable formatting (binary units)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(I?B?)?\s*$", re.IGNORECASE)


def parse_bytes(text: str | int | float) -> int:
    """Parse '4G', '512M', '1.5GiB', '1024' (bytes) into bytes (binary multiples)."""
    if isinstance(text, (int, float)):
        return int(text)
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"not a byte quantity: {text!r}")
    number, unit, _ = match.groups()
    return int(round(float(number) * _UNITS[unit.upper()]))


def format_bytes(n_bytes: float) -> str:
    """Format bytes as e.g. '1.50 GiB' (binary units)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


MiB = 1024**2
GiB = 1024**3
