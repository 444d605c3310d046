"""Command-line arguments checked when they are parsed: argparse types for the values every sub-command takes
(counts, sizes, seeds, scales, probabilities, devices, JSON, output files) and the error a bad command line
raises.

Each type is a function from the text to the value, raising ``argparse.ArgumentTypeError`` with a sentence that
says what is wrong and what to pass instead; argparse names the flag. A sub-command then checks the combinations
of flags it knows (a size that must divide by the patch size, a flag that conflicts with a checkpoint) and raises
``UsageError``. ``ledit`` turns both into one line, ``ledit <command>: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Callable, Iterable

DEVICE_TYPES = ("cpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's and most seeding APIs' range


class UsageError(ValueError):
    """A command line that cannot run: a bad flag value, or flags that do not fit together (or do not fit the
    checkpoint or data they name). ``ledit`` reports it in one line and exits with status 2."""


@contextlib.contextmanager
def flag_errors(flags: str, *errors: type[Exception]):
    """Re-raise the given errors from the block as a UsageError that starts with `flags` (what the user typed)."""
    try:
        yield
    except errors as error:
        raise UsageError(f"{flags}: {error}") from error


def _number(text: str, kind: Callable, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _ranged(kind: Callable, requirement: str, accepts: Callable[[float], bool]) -> Callable[[str], float]:
    """A type for numbers of `kind` (int or float; floats must be finite) that `accepts`, else "must be
    <requirement>, got <text>"."""

    def parse(text: str):
        value = _number(text, kind, "an integer" if kind is int else "a number")
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


positive_int = _ranged(int, "a whole number >= 1", lambda v: v >= 1)
nonnegative_int = _ranged(int, "a whole number >= 0", lambda v: v >= 0)
seed = _ranged(int, f"a seed in [0, {MAX_SEED}]", lambda v: 0 <= v <= MAX_SEED)
finite_float = _ranged(float, "a finite number", lambda v: True)
positive_float = _ranged(float, "a number > 0", lambda v: v > 0)
nonnegative_float = _ranged(float, "a number >= 0", lambda v: v >= 0)
# A probability or a decay.
unit_interval = _ranged(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
# A classifier-free guidance scale: 1 samples without guidance, more guides more. Below 1 the sampler would run
# unguided without saying so, so it is refused.
cfg_scale = _ranged(float, "a number >= 1 (1 = no guidance; DiT samples with 1.5 or 4.0)", lambda v: v >= 1.0)


def device(text: str) -> str:
    """cpu, cuda or cuda:N. Whether that device exists is checked when the run starts (ledit.runtime)."""
    kind, _, index = text.partition(":")
    if kind not in DEVICE_TYPES or (index and not index.isdigit()) or (index and kind != "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N")
    return text


def json_object(text: str) -> dict:
    """A JSON object of keyword arguments, e.g. '{"scan": "raster"}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({error.msg} at column {error.colno}); "
                                         "write an object such as '{\"scan\": \"raster\"}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is a JSON {type(value).__name__}, not an object of keyword "
                                         "arguments such as '{\"scan\": \"raster\"}'")
    return value


def file_with_suffix(*suffixes: str) -> Callable[[str], str]:
    """A path to write whose extension says its format, one of `suffixes` (case-insensitive)."""

    def check(text: str) -> str:
        if not text.lower().endswith(tuple(suffixes)):
            raise argparse.ArgumentTypeError(f"{text!r}: the file format follows the extension; use "
                                             f"{' or '.join(suffixes)}")
        return text

    return check


def comma_list(choices: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """A non-empty comma-separated subset of `choices`, in the order given."""
    choices = tuple(choices)

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        unknown = [name for name in chosen if name not in choices]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"{text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                                             f"choose a comma-separated subset of {','.join(choices)}")
        return chosen

    return parse


def size_list(text: str) -> tuple[tuple[int, int], ...]:
    """A non-empty comma-separated list of HEIGHTxWIDTH sizes, e.g. ``256x256,512x384`` (repeats kept)."""
    sizes = []
    for part in text.split(","):
        height, x, width = part.strip().lower().partition("x")
        if not (x and height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
            raise argparse.ArgumentTypeError(f"{text!r}: {part.strip()!r} is not a size; use HEIGHTxWIDTH in pixels, "
                                             "comma-separated, e.g. 256x256,512x384")
        sizes.append((int(height), int(width)))
    return tuple(sizes)


def one_of(choices: Iterable[str], what: str) -> Callable[[str], str]:
    """One of many names (too many for argparse's ``choices``, which prints them all in the usage line)."""
    choices = tuple(choices)

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; valid: {', '.join(choices)}")
        return text

    return check
