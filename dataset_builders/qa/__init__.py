"""Contexts that turn a paper into tasks instead of text to imitate.

* `physics-qa`: a teacher model (any OpenAI-compatible server, or llama.cpp's server started
  here on a GGUF) writes questions a physicist could ask without the paper, answered
  self-contained; every pair is filtered and every drop counted (`teacher`, `pairs`, `build`).
* `reading-comprehension`: tasks mined from the paper's own text by rules, offline and
  deterministic (`reading`).
"""
