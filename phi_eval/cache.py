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
from pathlib import Path

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
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")  # concurrent readers, crash-safe commits
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, value FROM entries WHERE namespace = ? AND key IN ({','.join('?' * len(chunk))})",
                    [namespace, *chunk])
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put(self, namespace: str, key: str, value) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO entries (namespace, key, value) VALUES (?, ?, ?)",
                             (namespace, key, json.dumps(value)))

    def put_many(self, namespace: str, items: list[tuple[str, object]]) -> None:
        """Many entries in one transaction."""
        with self._lock, self._db:
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
