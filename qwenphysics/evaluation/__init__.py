"""Evaluation and comparison of QwenPhysics models trained with different recipes.

* :mod:`.questions` / ``physics_qa.yml`` - the physics question set;
* :mod:`.scoring`, :mod:`.quantities`, :mod:`.texnorm` - answer scorers;
* :mod:`.perplexity` - held-out perplexity of a GGUF model on a test split;
* :mod:`.lmeval` - lm-evaluation-harness tasks, offline;
* :mod:`.runner` - ``scripts/evaluate.py``: one model -> one results JSON;
* :mod:`.compare` - ``scripts/compare.py``: several results -> report.md and plots.
"""

from .exceptions import EvalError

__all__ = ["EvalError"]
