"""Training-context specs: declarative YAML files in `dataset_builders/specs/`.

A spec names the output format (`chat` or `completion`), the filters, and how a paper
becomes training text. Copy one, edit it, and pass its path to `--spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from qwenphysics.core.paths import PROJECT_ROOT

from .filters import FilterSpec
from .records import InputError

SPEC_DIR = Path(__file__).parent / "specs"
FORMATS = ("chat", "completion")
SOURCES = ("metadata", "fulltext", "mixture")
# Contexts whose examples are not templates: a teacher model's Q&A, reading-comprehension tasks.
GENERATORS = ("teacher", "reading")


@dataclass
class Template:
    id: str
    user: str
    assistant: str


@dataclass
class Spec:
    name: str
    format: str
    source: str = "metadata"
    description: str = ""
    filters: FilterSpec = field(default_factory=FilterSpec)
    system_prompt: str | None = None
    templates: list[Template] = field(default_factory=list)
    templates_per_paper: int = 1
    text: str = "{title}\n\n{abstract}"
    options: dict = field(default_factory=dict)  # context-specific knobs (full text, mixtures)
    path: Path | None = None
    raw: dict = field(default_factory=dict)
    includes: list[Path] = field(default_factory=list)  # files the spec reads (its system prompt)

    def source_bytes(self) -> bytes:
        """The spec file and every file it includes: what its checksum covers."""
        if self.path is None:
            return b""
        return b"".join(p.read_bytes() for p in [self.path, *self.includes])


def list_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yml"))


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yml", ".yaml") and p.exists():
        return p
    candidate = SPEC_DIR / f"{name_or_path}.yml"
    if candidate.exists():
        return candidate
    raise InputError(f"unknown spec '{name_or_path}': use one of {', '.join(list_specs())} or a path to a .yml spec")


_KNOWN = {"name", "format", "source", "description", "filters", "system_prompt", "templates",
          "templates_per_paper", "text", "options", "decontaminate"}


def _system_prompt(value, path: Path) -> tuple[str | None, list[Path]]:
    """The text, from the spec itself or from `{file: PATH}`: a relative PATH is under the project
    root, so a spec copied anywhere still reads `serve/system-prompt.txt`."""
    if value is None or isinstance(value, str):
        return value, []
    if isinstance(value, dict) and set(value) == {"file"}:
        f = (PROJECT_ROOT / str(value["file"])).resolve()
        try:
            text = f.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise InputError(f"{path}: system_prompt file {value['file']} cannot be read ({e.strerror})") from None
        if not text:
            raise InputError(f"{path}: system_prompt file {value['file']} is empty")
        return text, [f]
    raise InputError(f"{path}: system_prompt is a text or {{file: PATH}}, not {value!r}")


def load(name_or_path: str) -> Spec:
    path = resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a spec is a YAML mapping (name, format, filters, ...)")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; known: {sorted(_KNOWN)}")
    for key in ("name", "format"):
        if not raw.get(key):
            raise InputError(f"{path}: missing '{key}'")
    if raw["format"] not in FORMATS:
        raise InputError(f"{path}: format must be one of {FORMATS}, not '{raw['format']}'")
    source = raw.get("source", "metadata")
    if source not in SOURCES:
        raise InputError(f"{path}: source must be one of {SOURCES}, not '{source}'")
    templates = []
    for i, t in enumerate(raw.get("templates") or []):
        if not isinstance(t, dict) or not {"id", "user", "assistant"} <= set(t):
            raise InputError(f"{path}: templates[{i}] needs id, user and assistant")
        templates.append(Template(str(t["id"]), str(t["user"]), str(t["assistant"])))
    options = dict(raw.get("options") or {})
    generator = options.get("generator")
    if generator is not None and generator not in GENERATORS:
        raise InputError(f"{path}: options.generator must be one of {GENERATORS}, not '{generator}'")
    if raw["format"] == "chat" and source == "metadata" and not templates and generator is None:
        raise InputError(f"{path}: a chat spec needs at least one entry under 'templates' "
                         f"(or options.generator: one of {GENERATORS})")
    system_prompt, includes = _system_prompt(raw.get("system_prompt"), path)
    if includes:
        raw = {**raw, "system_prompt": system_prompt}  # the manifest's resolved spec shows the text
    tpp = int(raw.get("templates_per_paper", 1))
    if templates and not 1 <= tpp <= len(templates):
        raise InputError(f"{path}: templates_per_paper must be between 1 and {len(templates)}")
    return Spec(
        name=str(raw["name"]), format=raw["format"], source=source,
        description=str(raw.get("description", "")).strip(),
        filters=FilterSpec.from_dict(raw.get("filters"), str(path)),
        system_prompt=system_prompt, templates=templates, templates_per_paper=tpp, includes=includes,
        text=str(raw.get("text", "{title}\n\n{abstract}")), options=options,
        path=path, raw=raw,
    )
