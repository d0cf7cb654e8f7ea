"""Argument types the commands share."""

from __future__ import annotations

import argparse
import math

__all__ = ["name_text", "non_negative_float", "positive_float", "positive_int"]


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1, or a usage error saying what is wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds > 0, or a usage error saying why not."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds >= 0, or a usage error saying why not."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return value


def seconds_or_forever(text: str) -> float:
    """An ``argparse`` type: seconds >= 0, or ``inf`` (or ``forever``) for no bound."""
    if text.strip().lower() in {"inf", "forever"}:
        return math.inf
    return non_negative_float(text)


def name_text(text: str) -> str:
    """An ``argparse`` type: a non-empty name of printable characters without spaces.

    For names that end up in Redis and in ``inspect`` tables (a consumer name): a space
    or a control character there only makes trouble for whoever reads them.
    """
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if not text.isprintable() or any(character.isspace() for character in text):
        raise argparse.ArgumentTypeError(
            f"must be printable characters without spaces, not {text!r}"
        )
    return text
