"""The environment variables that keep a child process off the network and quiet.

`HUB_OFFLINE` stops the Hugging Face libraries (hub, datasets, transformers) from reaching the
hub: models and data come from local folders and caches. `QUIET` turns off the telemetry of
Axolotl, W&B and the hub, and the tokenizers' thread pool warning. `OFFLINE_ENV` is both: what
every training, conversion, merge and lm-eval subprocess is started with. (`serving.py` keeps
its own: it is mounted alone into a container, with the standard library only.)
"""

from __future__ import annotations

HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
QUIET = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
         "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}
OFFLINE_ENV = {**HUB_OFFLINE, **QUIET}
