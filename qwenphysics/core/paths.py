"""Where the package's own data files live."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The evaluation's question set. The dataset builders read it as data (never import the
# evaluation code) to keep its questions and reference answers out of every training context.
EVALUATION_QUESTIONS = PACKAGE_ROOT / "evaluation" / "physics_qa.yml"
