"""Text files read as UTF-8, where a byte that is not UTF-8 is a usage error naming the file and line."""
from __future__ import annotations

from pathlib import Path

from phi_eval.errors import UsageError


def decode(data: bytes, path: Path | str, line: int | None = None) -> str:
    """`data` (the file, or its line number `line`) as UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line or data[:e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line} is not UTF-8 text (byte 0x{data[e.start]:02x}); convert the file to "
                         "UTF-8, e.g. with iconv -f latin1 -t utf-8") from None


def read_text(path: Path | str) -> str:
    return decode(Path(path).read_bytes(), path)
