"""argparse types for phi-eval's options: a value out of range is one line that names the range."""
from __future__ import annotations

import argparse
import re


def number(kind, low, high=None, low_open=False, what=""):
    """An argparse type: a `kind` number in [low, high] (low excluded when low_open); the message names the range."""
    def parse(value: str):
        try:
            parsed = kind(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed != parsed or parsed in (float("inf"), float("-inf")) \
                or parsed < low or (low_open and parsed == low) or (high is not None and parsed > high):
            raise argparse.ArgumentTypeError(f"give {what}, not {value!r}")
        return parsed
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


POSITIVE = number(int, 1, what="a whole number of at least 1")
NON_NEGATIVE = number(int, 0, what="a whole number of at least 0")
SECONDS = number(float, 0, low_open=True, what="a number of seconds above 0")
PORT = number(int, 0, 65535, what="a port from 0 to 65535")
FRACTION = number(float, 0, 1, what="a number from 0 to 1")
OPEN_FRACTION = number(float, 0, 1, low_open=True, what="a number above 0 and at most 1")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device(value: str) -> str:
    if not DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"use cpu, cuda, cuda:N, mps or auto, not {value!r}")
    return value


DTYPES = ("auto", "float32", "bfloat16", "float16")
