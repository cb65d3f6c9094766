"""A model's answers kept on disk, so that a rerun (or a run after a crash) asks nothing twice.

One SQLite file (WAL journal, a commit per answer): key -> the model's raw answer, with a label
saying what it answered (a paper id, a question id). The caller's key hashes everything the
answer depends on: the Q&A teacher's hashes the paper, the text shown, the prompt version, the
teacher's identity and its sampling; the judge's hashes the question, the reference, the answer
graded, the rubric and the judge. A change to any of them asks again instead of reusing a stale
answer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from .errors import UserError


class AnswerCache:
    def __init__(self, path: Path, flag: str = "--teacher-cache"):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, paper TEXT, "
                             "answer TEXT NOT NULL, created REAL DEFAULT (julianday('now')))")
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"answer cache {self.path} is not usable ({e}): pass {flag} PATH") from None
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
