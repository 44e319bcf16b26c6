"""Keyed pseudonyms for user ids (opt-in).

With ``RECSYS_PSEUDONYMIZE_KEY`` (or a key file named by ``RECSYS_PSEUDONYMIZE_KEY_FILE``)
every user id is replaced, as soon as a source row is read, by ``u_`` + the first 128 bits
of HMAC-SHA256(key, id) in hex. The same id always gets the same token, so the pipeline,
its splits and its models work unchanged on tokens; without the key a token cannot be
linked back to an id (HMAC is one-way and keyed: guessing ids needs the key). Item ids are
not touched. Malformed source lines keep their text for inspection, with the user field
(located by position) replaced by its token; a line whose user field cannot be located is
redacted.

The warehouse records the key's *fingerprint* (an HMAC of a fixed label, never the key)
in ``privacy_state``; a run with another key, or without one on a pseudonymized warehouse,
or with one on a warehouse that holds raw ids, is refused (:func:`check_key`), because
the tables would mix two id spaces. ``python -m recsys_dagster.cli retokenize`` moves a
warehouse to the configured key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pandas as pd

TOKEN_PREFIX = "u_"
TOKEN_HEX = 32  # 128 bits
MIN_KEY_BYTES = 16
ID_SPACE = "id_space"  # privacy_state name of the warehouse's user-id space
OFF = "off"  # its value for a warehouse holding raw user ids
USER_SPAN = "_user_span"  # reader column: (start, end) of the user field in a malformed raw line


class PrivacyError(ValueError):
    """A one-line problem with the pseudonymization key or the warehouse's id space."""


class Pseudonymizer:
    """HMAC-SHA256 tokens of user ids under one key (the key is never printed)."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise PrivacyError(f"the pseudonymization key has {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                               "(e.g. `openssl rand -hex 32`)")
        self._key = key
        self.fingerprint = hmac.new(key, b"recsys_dagster/key-fingerprint", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key
        return f"Pseudonymizer(fingerprint={self.fingerprint})"

    def token(self, user_id) -> str:
        text = str(user_id).strip()
        return TOKEN_PREFIX + hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:TOKEN_HEX]

    def tokens(self, values: pd.Series) -> pd.Series:
        """Tokens of a column (missing and empty values stay as they are: cleaning flags them)."""
        text = values.astype("string").str.strip()
        keep = text.notna() & (text != "")
        mapping = {v: self.token(v) for v in pd.unique(text[keep])}
        out = values.astype(object).copy()
        out[keep] = text[keep].map(mapping).astype(object)
        return out

    def protect(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``user_id`` tokenized, and in ``raw_line`` (malformed lines) the user field at
        ``_user_span`` replaced by its token; a raw line without a located user field is
        redacted. Drops the ``_user_span`` helper column. An id that cleaning would reject
        as malformed keeps that verdict: the reason moves to ``parse_error`` (which cleaning
        checks first), since its token would look well-formed."""
        from recsys_dagster.core.datasets.metadata import id_problem

        frame = frame.copy()
        if "parse_error" in frame.columns:
            problem = id_problem(frame["user_id"], "user_id")
            malformed = problem.notna() & problem.str.startswith("malformed", na=False) & frame["parse_error"].isna()
            frame.loc[malformed, "parse_error"] = problem[malformed]
        frame["user_id"] = self.tokens(frame["user_id"])
        if "raw_line" in frame.columns:
            spans = frame[USER_SPAN] if USER_SPAN in frame.columns else pd.Series(None, index=frame.index)
            frame["raw_line"] = [self._line(line, span) for line, span in zip(frame["raw_line"], spans, strict=True)]
        return frame.drop(columns=[USER_SPAN], errors="ignore")

    def _line(self, line, span):
        if not isinstance(line, str):
            return line
        if not isinstance(span, tuple):
            return f"[line redacted: user field not located; {len(line)} characters]"
        start, end = span
        field = line[start:end]
        return line[:start] + (self.token(field) if field.strip() else field) + line[end:]


def strip_spans(frame: pd.DataFrame, pseudonymizer: Pseudonymizer | None) -> pd.DataFrame:
    """What a dataset reader returns: tokenized with a pseudonymizer, else the frame less
    the reader's helper column."""
    if pseudonymizer is not None:
        return pseudonymizer.protect(frame)
    return frame.drop(columns=[USER_SPAN], errors="ignore")


def read_key(env: dict[str, str] | None = None, name: str = "RECSYS_PSEUDONYMIZE_KEY") -> bytes | None:
    """The key from ``<name>`` or the file named by ``<name>_FILE`` (not both); None when unset."""
    env = os.environ if env is None else env
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value and path:
        raise PrivacyError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            data = Path(path).read_bytes().strip()
        except OSError as exc:
            raise PrivacyError(f"{name}_FILE={path}: cannot read the key file ({exc.strerror or exc})") from None
        if not data:
            raise PrivacyError(f"{name}_FILE={path}: the key file is empty")
        return data
    return value.strip().encode("utf-8") if value else None


def pseudonymizer_from_env(env: dict[str, str] | None = None) -> Pseudonymizer | None:
    key = read_key(env)
    return Pseudonymizer(key) if key is not None else None


def id_space(pseudonymizer: Pseudonymizer | None) -> str:
    """What ``privacy_state`` records: the key fingerprint, or ``off`` for raw ids."""
    return pseudonymizer.fingerprint if pseudonymizer is not None else OFF


def stored_form(user_ids, pseudonymizer: Pseudonymizer | None) -> list[str]:
    """The ids as the warehouse stores them: tokens (an argument that already is a token
    passes unchanged, so a token copied from a table works too) or the raw ids."""
    out = []
    for u in user_ids:
        u = str(u).strip()
        out.append(u if pseudonymizer is None or is_token(u) else pseudonymizer.token(u))
    return out


def is_token(value: str) -> bool:
    rest = value[len(TOKEN_PREFIX):]
    return value.startswith(TOKEN_PREFIX) and len(rest) == TOKEN_HEX and all(c in "0123456789abcdef" for c in rest)


def recorded_space(conn) -> str | None:
    """The id space the warehouse recorded, or None when it has not recorded one."""
    from recsys_dagster.core.privacy.state import get_state

    return get_state(conn, ID_SPACE)


def _holds_users(conn) -> bool:
    from recsys_dagster.core import warehouse as wh

    return any(wh.table_exists(conn, t) and conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
               for t in ("users", "raw_interactions", "cleaned_interactions"))


def check_key(conn, pseudonymizer: Pseudonymizer | None) -> str:
    """Refuse to write user rows in another id space than the warehouse's; record the space
    on first use (a warehouse written before this existed holds raw ids). Returns it."""
    want = id_space(pseudonymizer)
    have = recorded_space(conn)
    if have is None:
        from recsys_dagster.core.privacy.state import set_state

        have = OFF if _holds_users(conn) else want
        set_state(conn, ID_SPACE, have)
    if have != want:
        def describe(space):
            return "raw user ids (no key)" if space == OFF else f"pseudonyms under the key with fingerprint {space}"
        raise PrivacyError(
            f"the warehouse holds {describe(have)}, but this run has {describe(want)}: refusing to mix id spaces. "
            "Restore the previous key setting, or move the warehouse to this one with "
            "`python -m recsys_dagster.cli retokenize` (see README, Privacy)")
    return have
