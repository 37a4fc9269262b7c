"""SQLite cache of finished work, so a killed run resumes where it stopped.

Each finished generation is committed at once, keyed by the model's identity and the
request; each sandbox verdict by the program, its tests and the limits. A rerun of the
same command reads them back instead of recomputing, so nothing is lost or counted twice.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from phi_eval.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (namespace, key)
);
"""


def make_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self.named_errors():
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")  # concurrent readers, crash-safe commits
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    @contextmanager
    def named_errors(self):
        """A broken cache or a full disk is the user's to fix: one line that says how."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            message = str(e)
            if "full" in message:
                raise UsageError(f"the disk holding the cache {self.path} is full ({message}); free space there, "
                                 "then rerun the same command: finished work is kept") from None
            if "locked" in message or "busy" in message:
                raise UsageError(f"the cache {self.path} is locked by another process ({message}); wait for it "
                                 "or set PHI_EVAL_HOME elsewhere") from None
            if isinstance(e, sqlite3.OperationalError) and "readonly" in message.replace(" ", ""):
                raise UsageError(f"the cache {self.path} is read-only ({message}); make it writable or set "
                                 "PHI_EVAL_HOME elsewhere") from None
            raise UsageError(f"the cache {self.path} is damaged ({message}); delete it (and its -wal and -shm "
                             "files) or set PHI_EVAL_HOME elsewhere, then rerun") from None

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        with self._lock, self.named_errors():
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, value FROM entries WHERE namespace = ? AND key IN ({','.join('?' * len(chunk))})",
                    [namespace, *chunk])
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, namespace: str, key: str, value) -> None:
        with self._lock, self.named_errors(), self._db:
            self._db.execute("INSERT OR REPLACE INTO entries (namespace, key, value) VALUES (?, ?, ?)",
                             (namespace, key, json.dumps(value)))

    def put_many(self, namespace: str, items: list[tuple[str, object]]) -> None:
        """Many entries in one transaction."""
        with self._lock, self.named_errors(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO entries (namespace, key, value) VALUES (?, ?, ?)",
                                 [(namespace, key, json.dumps(value)) for key, value in items])

    def close(self) -> None:
        self._db.close()


class NoCache:
    """--no-cache: same interface, remembers nothing."""

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, object]:
        return {}

    def put(self, namespace: str, key: str, value) -> None:
        pass

    def put_many(self, namespace: str, items: list[tuple[str, object]]) -> None:
        pass

    def close(self) -> None:
        pass
