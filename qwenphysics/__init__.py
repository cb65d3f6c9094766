"""QwenPhysics: the machinery around the recipes (toolchain, conversion, serving, evaluation)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
