"""Lossless readers for delimited text files.

Every physical line of a data file becomes exactly one row: well-formed lines are split
into their fields (kept as text), malformed lines keep the raw line and a reason. Nothing
is dropped here; cleaning decides what is usable.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from recsys_dagster.core.datasets.errors import DatasetError

#: The csv module refuses fields over 128 KiB by default; a huge title or description is
#: read whole (metadata clips it and flags the row) instead of failing the line.
MAX_FIELD_BYTES = 64 << 20
csv.field_size_limit(MAX_FIELD_BYTES)


def decode_line(raw: bytes, encoding: str) -> tuple[str, bool]:
    """Decode one line; returns (text, clean). Undecodable bytes become U+FFFD."""
    try:
        return raw.decode(encoding), True
    except UnicodeDecodeError:
        return raw.decode(encoding, errors="replace"), False


def read_lines(path: str | Path) -> list[bytes]:
    """The physical lines of ``path`` (UTF-8 BOM dropped); ``source_row`` N is ``lines[N - 1]``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.splitlines()


def read_delimited(
    path: str | Path,
    columns: list[str],
    *,
    sep: str = ",",
    header: bool = True,
    required: tuple[str, ...] = (),
    encoding: str = "utf-8",
    quoting: bool = True,
    user_column: str | None = None,
) -> pd.DataFrame:
    """Read ``path`` into a DataFrame of text columns, one row per physical data line.

    Args:
        columns: column names when ``header`` is False; with a header, the names the
            caller knows about (others are kept as extra columns, missing optional ones
            are filled with None).
        required: columns that must be present in the header (else a one-line
            :class:`DatasetError` naming the file).

        user_column: the column holding user ids. A malformed line then gets, best
            effort, the text at that column's position as its user id (so the quarantine
            and forget-user can attribute it), and a ``_user_span`` column with that
            field's ``(start, end)`` in ``raw_line`` (pseudonymization rewrites it there).

    Returns columns ``source_file``, ``source_row`` (1-based line number in the file),
    the data columns, ``raw_line`` and ``parse_error`` (None for well-formed lines).
    """
    path = Path(path)
    lines = read_lines(path)
    start = 0
    names = list(columns)
    if header:
        if not lines or not lines[0].strip():
            raise DatasetError(f"{path}: empty file, expected a header line with columns {list(required) or columns}")
        head, _ = decode_line(lines[0], encoding)
        names = [h.strip().lower() for h in next(csv.reader([head], delimiter=sep))]
        missing = [c for c in required if c not in names]
        if missing:
            raise DatasetError(f"{path}: line 1: missing required column(s) {missing}; found {names}")
        if len(set(names)) != len(names):
            raise DatasetError(f"{path}: line 1: duplicate column names in header {names}")
        start = 1
    width = len(names)
    user_pos = names.index(user_column) if user_column in names else None
    spans: list[tuple[int, int] | None] = []
    rows: list[list[str | None]] = []
    source_rows: list[int] = []
    raw_lines: list[str | None] = []
    errors: list[str | None] = []
    for lineno, raw in enumerate(lines[start:], start=start + 1):
        text, clean = decode_line(raw, encoding)
        if not text.strip():
            continue  # blank lines carry no record; counted nowhere on purpose
        if quoting:
            try:
                fields = next(csv.reader([text], delimiter=sep, strict=True))
            except csv.Error as exc:
                fields, err = None, f"malformed line: {exc}"
        else:
            fields = text.split(sep)
        err = None if fields is not None else err
        if fields is not None and len(fields) != width:
            err = f"malformed line: expected {width} fields, found {len(fields)}"
        if err is None and not clean:
            err = f"invalid {encoding} bytes in line"
            # keep the decoded fields so the quarantine shows what was there
        source_rows.append(lineno)
        span = _field_span(text[:10_000], sep, user_pos) if err is not None and user_pos is not None else None
        if err is not None and (fields is None or len(fields) != width):
            rows.append([None] * width)
            if span is not None:
                rows[-1][user_pos] = text[span[0]:span[1]]
            raw_lines.append(text[:10_000])
        else:
            rows.append(fields)
            raw_lines.append(None if err is None else text[:10_000])
        spans.append(span)
        errors.append(err)
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    frame.insert(0, "source_row", pd.array(source_rows, dtype="int64"))
    frame.insert(0, "source_file", path.name)
    frame["raw_line"] = raw_lines
    frame["parse_error"] = errors
    if user_column is not None:
        frame["_user_span"] = spans
    return frame


def _field_span(text: str, sep: str, pos: int) -> tuple[int, int] | None:
    """``(start, end)`` of field ``pos`` of ``text`` split naively on ``sep`` (None when the
    line has fewer fields)."""
    start = 0
    for _ in range(pos):
        at = text.find(sep, start)
        if at < 0:
            return None
        start = at + len(sep)
    end = text.find(sep, start)
    return start, (len(text) if end < 0 else end)
