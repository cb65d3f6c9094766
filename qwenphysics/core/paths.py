"""Where the project's own files live (the repository checkout and its data files)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_ROOT.parent
# The evaluation's question set. The dataset builders read it as data (never import the
# evaluation code) to keep its questions and reference answers out of every training context.
EVALUATION_QUESTIONS = PACKAGE_ROOT / "evaluation" / "physics_qa.yml"
