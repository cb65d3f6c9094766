"""Teacher answers kept on disk, so that a rerun (or a run after a crash) asks nothing twice.

One SQLite file (WAL journal, a commit per answer): key -> the teacher's raw answer. The key
hashes the paper id, the text shown, the prompt version, the teacher's identity and the
sampling settings, so a change to any of them asks again instead of reusing a stale answer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from qwenphysics.core.errors import UserError


class AnswerCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, paper TEXT, "
                             "answer TEXT NOT NULL, created REAL DEFAULT (julianday('now')))")
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"teacher cache {self.path} is not usable ({e}): pass --teacher-cache PATH") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, paper: str, answer: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers (key, paper, answer) VALUES (?, ?, ?)",
                             (key, paper, answer))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
