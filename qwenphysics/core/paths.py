"""Where the package's own data files live."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The checkout: what specs name relative paths against (e.g. serve/system-prompt.txt).
PROJECT_ROOT = PACKAGE_ROOT.parent
# The evaluation's question set. The dataset builders read it as data (never import the
# evaluation code) to keep its questions and reference answers out of every training context.
EVALUATION_QUESTIONS = PACKAGE_ROOT / "evaluation" / "physics_qa.yml"
# The system prompt of every training context, the served preset, the Modelfile and the
# evaluation (qwenphysics.core.prompts); beside the preset, so Compose mounts both.
SYSTEM_PROMPT_FILE = PROJECT_ROOT / "serve" / "system-prompt.txt"
