"""Chat with a QwenPhysics GGUF in Open WebUI, on this machine, without Docker.

Starts llama.cpp's server and Open WebUI on 127.0.0.1 with the settings of docker-compose.yml
(read from serve/.env when it exists), imports the physics preset, prints the URL, and stops
both on Ctrl-C. Logs: <data dir>/logs/.

Usage:
  .venv/bin/python scripts/serve.py                    # newest GGUF under models/ (Q4_K_M first)
  .venv/bin/python scripts/serve.py --model models/qwen3b-physics/qwen3b-physics-Q4_K_M.gguf --port 3000
  .venv/bin/python scripts/serve.py --model models/qwen3b-physics/base-F16.gguf \
      --lora models/qwen3b-physics/qwen3b-physics-lora-F16.gguf
  .venv/bin/python scripts/serve.py --no-auth --threads 2 --ctx-size 4096   # a local demo
"""

import sys

from qwenphysics.serving import main

if __name__ == "__main__":
    sys.exit(main())
