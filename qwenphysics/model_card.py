"""Model card (Hugging Face front matter) and Ollama Modelfile for a converted run."""

from __future__ import annotations

from pathlib import Path

from .core.prompts import system_prompt

LICENSES = {  # base model -> (licence id for the HF card, note)
    "qwen2.5-3b": ("other", "Qwen Research licence (the 3B weights are not Apache-2.0): "
                            "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct/blob/main/LICENSE"),
    "qwen2.5-72b": ("other", "Qwen licence: https://huggingface.co/Qwen/Qwen2.5-72B-Instruct/blob/main/LICENSE"),
}


def licence_for(base_model: str) -> tuple[str, str]:
    b = base_model.lower()
    for key, val in LICENSES.items():
        if key in b:
            return val
    return ("apache-2.0", "Apache-2.0, as the base model")


def describe(run) -> str:
    merge = getattr(run, "merge", None)
    if merge:
        parents = ", ".join(f"`{p.get('run') or p['ref']}`" for p in merge.get("parents", []))
        return (f"A {merge.get('merge_method')} merge (mergekit, QwenPhysics merge recipe `{run.name}`) of "
                f"{parents}.")
    return f"{run.base_model} fine-tuned on arXiv physics with the QwenPhysics recipe `{run.name}`."


def write_model_card(path: Path, run, sums: dict[str, str], meta: dict) -> None:
    lic, note = licence_for(run.base_model)
    datasets = [d.name for d in run.data_dirs]
    default = next((n for n in sums if "Q4_K_M" in n), next(iter(sums), "model.gguf"))
    front = ["---", f"base_model: {run.base_model}", f"license: {lic}"]
    if lic == "other":
        front.append("license_name: qwen-research")
    front += ["library_name: gguf", "pipeline_tag: text-generation", "tags:", "  - physics", "  - arxiv",
              "  - qwen2.5", "  - gguf", "  - qwenphysics"]
    if datasets:
        front += ["datasets:"] + [f"  - {d}" for d in datasets]
    front.append("---")
    body = [
        "", f"# QwenPhysics — {run.name}", "",
        describe(run), "",
        "## Files", "", "| file | sha256 |", "|---|---|",
        *[f"| `{n}` | `{s}` |" for n, s in sums.items()], "",
        "## Use", "",
        "```bash",
        f"llama-server -m {default} --jinja -c 4096   # llama.cpp's server, from any llama.cpp build",
        "ollama create qwenphysics -f Modelfile && ollama run qwenphysics",
        "```", "",
        "In a QwenPhysics checkout, `.venv/bin/python scripts/serve.py --model <this folder>/"
        f"{default}` starts the project's llama.cpp build behind Open WebUI.", "",
        "Sampling defaults (also stored in the GGUF metadata): temperature 0.1, 4096-token context.", "",
        "## Provenance", "",
        f"- recipe: `{run.recipe}`" if run.recipe else "- recipe: unknown",
        *[f"- {t}" for t in meta.get("general.tags", []) if ":" in t], "",
        "## Evaluation", "",
        f"Not part of this card: `.venv/bin/python scripts/evaluate.py --gguf {default} --data <dataset> "
        "--out results/<name>.json` evaluates it, and `scripts/compare.py` puts the results beside the "
        "base model's in a report.", "",
        "## Licence", "", note, "",
        "Training data: arXiv metadata (CC0) and, for full-text contexts, papers under the licences recorded "
        "in the dataset manifests.", "",
    ]
    path.write_text("\n".join(front + body), encoding="utf-8")


def write_modelfile(path: Path, gguf_name: str) -> None:
    path.write_text(
        f"# Ollama: ollama create qwenphysics -f Modelfile\n"
        f"FROM ./{gguf_name}\n"
        'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
        '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n"""\n'
        f'SYSTEM """{system_prompt()}"""\n'
        "PARAMETER temperature 0.1\n"
        "PARAMETER num_ctx 4096\n"
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|endoftext|>"\n',
        encoding="utf-8",
    )
