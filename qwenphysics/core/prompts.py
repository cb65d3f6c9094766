"""The one QwenPhysics system prompt, read from `serve/system-prompt.txt`.

Training contexts, the served preset (local and Compose), the Ollama Modelfile, the
evaluation and the demo all read this file, so a model is asked with the prompt it was
trained with. `serve/physics-preset.json` holds no copy: the preset loader adds it.
"""

from __future__ import annotations

from .paths import SYSTEM_PROMPT_FILE


def system_prompt() -> str:
    return SYSTEM_PROMPT_FILE.read_text(encoding="utf-8").strip()
