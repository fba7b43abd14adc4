"""Progress bars on stderr: quiet when stderr is not a TTY or with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], quiet: bool = False, **kwargs: object) -> Iterator[T]:
    """Wrap ``iterable`` in tqdm on stderr unless quiet or not interactive."""
    disable = quiet or not sys.stderr.isatty()
    return iter(tqdm(iterable, disable=disable, file=sys.stderr, **kwargs))
