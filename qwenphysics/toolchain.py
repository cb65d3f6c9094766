"""Where llama.cpp lives: one pinned version, fetched from the llama-cpp-python sdist.

The sdist vendors the whole llama.cpp tree at one commit: the HF->GGUF converters with
their sibling `gguf-py`, and the C++ sources of `llama-server`, `llama-quantize`,
`llama-imatrix`, `llama-perplexity` and `libllama`. `scripts/setup.sh` downloads it,
checks its SHA-256 and builds the tools once per version into the cache below; the same
`libllama.so` then serves llama-cpp-python (installed with `LLAMA_BUILD=OFF`), so the C++
tree is compiled once.

A user with their own llama.cpp checkout sets ``QWENPHYSICS_LLAMA_CPP=/path/to/llama.cpp``
(a tree with the converters, and its CMake build in ``build/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
TOOLS = ("llama-server", "llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench")


class ToolchainMissing(RuntimeError):
    """llama.cpp is not built yet; the message says which command builds it."""


def cache_dir() -> Path:
    return Path(os.environ.get("QWENPHYSICS_CACHE", Path.home() / ".cache" / "qwenphysics"))


@dataclass(frozen=True)
class Toolchain:
    source: Path  # the llama.cpp tree (converters, gguf-py, C++ sources)
    build: Path  # its CMake build directory

    @property
    def bin_dir(self) -> Path:
        return self.build / "bin"

    @property
    def lib_dir(self) -> Path:
        """Directory holding libllama.so, for llama-cpp-python's LLAMA_CPP_LIB_PATH."""
        return self.bin_dir

    @property
    def gguf_py(self) -> Path:
        return self.source / "gguf-py"

    @property
    def convert_hf(self) -> Path:
        return self.source / "convert_hf_to_gguf.py"

    @property
    def convert_lora(self) -> Path:
        return self.source / "convert_lora_to_gguf.py"

    def bin(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.exists():
            raise ToolchainMissing(
                f"{path} is missing: run `make setup` (or `bash scripts/setup.sh llama`) to build llama.cpp"
            )
        return path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for processes that use llama-cpp-python or the converter."""
        env = dict(os.environ if base is None else base)
        env["LLAMA_CPP_LIB_PATH"] = str(self.lib_dir)
        env["MTMD_CPP_LIB"] = str(self.lib_dir / "libmtmd.so")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.gguf_py), env.get("PYTHONPATH", "")) if p
        )
        return env


def default_root() -> Path:
    return cache_dir() / "llama.cpp" / LLAMA_CPP_PYTHON_VERSION


def find_toolchain() -> Toolchain:
    """The user's checkout if QWENPHYSICS_LLAMA_CPP is set, else the pinned build in the cache."""
    override = os.environ.get("QWENPHYSICS_LLAMA_CPP")
    if override:
        root = Path(override)
        if not (root / "convert_hf_to_gguf.py").exists():
            raise ToolchainMissing(
                f"QWENPHYSICS_LLAMA_CPP={root} has no convert_hf_to_gguf.py: point it at a llama.cpp checkout"
            )
        return Toolchain(source=root, build=root / "build")
    root = default_root()
    tc = Toolchain(source=root / "src" / "vendor" / "llama.cpp", build=root / "build")
    if not tc.convert_hf.exists():
        raise ToolchainMissing(
            f"llama.cpp {LLAMA_CPP_COMMIT[:9]} is not set up in {root}: run `make setup`"
        )
    return tc
