"""The docs stay true: every command in a README's code blocks and in the scripts' usage
docstrings names files, recipes, specs, make targets and flags that exist (flags checked
against the command's own `--help`)."""

from __future__ import annotations

import ast
import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = sorted([ROOT / "README.md", *ROOT.glob("*/README.md")])
USAGE_FILES = sorted([*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")])
# repository folders whose files a doc may name (outputs such as data/, outputs/, models/ are the user's)
REPO_DIRS = ("recipes", "scripts", "dataset_builders", "serve", "benchmarks", "requirements", "qwenphysics", "tests")
REPO_FILES = ("Makefile", "docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.gpu.yml", "pyproject.toml")
# our own entry points, whose --help lists every flag they take
OWN_MODULES = ("dataset_builders", "qwenphysics")
SHELL_BLOCK = {"", "bash", "sh", "shell", "console"}
_DIRS, _FILES = "|".join(REPO_DIRS), "|".join(re.escape(f) for f in REPO_FILES)
PATH_RE = re.compile(rf"(?<![\w./-])((?:{_DIRS})/[\w./*<>{{}}-]+|(?:{_FILES}))(?![\w/-])")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def md_blocks(path: Path):
    """(first line number, text) of each shell code block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if m:
            start, lang, body = i + 1, m.group(1), []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            if lang in SHELL_BLOCK:
                yield start + 1, "\n".join(body)
        i += 1


def usage_block(path: Path):
    """The indented lines after `Usage:` in a script's docstring (or the rest of that line)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines = doc.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("Usage:"):
            body = [line[len("Usage:"):].strip()] if line[len("Usage:"):].strip() else []
            for more in lines[n + 1:]:
                if more and not more.startswith(" "):
                    break
                body.append(more)
            yield n + 2, "\n".join(body)


def commands(where: str, start: int, text: str):
    """Commands of a block: continuation lines joined, prompts and comments dropped, split at
    `&&`, `;` and `|`; lines that are not commands (output, YAML) are skipped."""
    joined: list[tuple[int, str]] = []
    buf, first = "", None
    for k, line in enumerate(text.splitlines()):
        if first is None:
            first = start + k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        joined.append((first, buf + line))
        buf, first = "", None
    for lineno, line in joined:
        line = re.sub(r"^\s*\$ ", "", line).strip()
        if not line or line.startswith("#") or line.startswith("("):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        cmd: list[str] = []
        for w in words + [";"]:
            if w in ("&&", ";", "|", "||"):
                if cmd:
                    yield Command(f"{where}:{lineno}", tuple(cmd))
                cmd = []
            else:
                cmd.append(w)


@functools.lru_cache(maxsize=1)
def all_commands() -> tuple[Command, ...]:
    out = []
    for doc in DOCS:
        for start, text in md_blocks(doc):
            out += commands(rel(doc), start, text)
    for script in USAGE_FILES:
        for start, text in usage_block(script):
            out += commands(rel(script), start, text)
    return tuple(out)


def program(words: tuple[str, ...]) -> tuple[str, list[str]]:
    """(program, its arguments), past environment assignments and `time`/`sudo`/`env`."""
    w = list(words)
    while w and (re.match(r"^[A-Z_][A-Z0-9_]*=", w[0]) or w[0] in ("time", "sudo", "env", "exec")):
        w.pop(0)
    return (w[0], w[1:]) if w else ("", [])


@functools.cache
def help_probe(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)


def help_text(*argv: str) -> str:
    p = help_probe(*argv)
    assert p.returncode == 0, f"`{' '.join(argv)} --help` failed: {(p.stderr or p.stdout).strip()[-300:]}"
    return p.stdout


def own_entry(prog: str, args: list[str]) -> tuple[list[str], list[str]] | None:
    """For `python scripts/x.py ...` or `python -m <our module> ...`: (the argv to ask for
    --help, the remaining arguments); None for anything else."""
    if not re.search(r"(^|/)python3?$", prog) or not args:
        return None
    if args[0] == "-m" and len(args) > 1 and args[1].split(".")[0] in OWN_MODULES:
        entry, rest = ["-m", args[1]], args[2:]
    elif args[0].endswith(".py") and args[0].split("/")[0] in ("scripts", "benchmarks"):
        entry, rest = [args[0]], args[1:]
    else:
        return None
    help_text(*entry)
    if rest and re.fullmatch(r"[a-z][a-z0-9-]*", rest[0]) and help_probe(*entry, rest[0]).returncode == 0:
        entry, rest = entry + [rest[0]], rest[1:]  # a subcommand (listed or not in the top help)
    return entry, rest


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def specs() -> set[str]:
    return {p.stem for p in (ROOT / "dataset_builders" / "specs").glob("*.yml")}


def named_paths(text: str) -> list[str]:
    return [m.group(1).rstrip(".,)") for m in PATH_RE.finditer(text)]


@functools.cache
def generated(p: str) -> bool:
    """A path git ignores: an output the project writes (benchmarks/results/, serve/.env)."""
    return subprocess.run(["git", "check-ignore", "-q", p], cwd=ROOT).returncode == 0


def path_exists(p: str) -> bool:
    if any(c in p for c in "<>{}"):  # a placeholder: check the folder before it
        p = re.split(r"[<{]", p)[0].rsplit("/", 1)[0]
    if "*" in p:
        return any(ROOT.glob(p))
    return (ROOT / p).exists() or generated(p)


def created_paths(cmds) -> set[tuple[str, str]]:
    """(doc, path) a doc's own commands create: the last argument of cp/mv/ln/touch/mkdir, or
    a redirection's target."""
    made = set()
    for c in cmds:
        prog, args = program(c.words)
        doc = c.where.split(":")[0]
        if prog in ("cp", "mv", "ln", "touch", "mkdir") and args:
            made |= {(doc, a.rstrip("/")) for a in (args if prog in ("touch", "mkdir") else args[-1:])}
        made |= {(doc, args[k + 1]) for k, a in enumerate(args[:-1]) if a in (">", ">>")}
    return made


def problems() -> list[str]:
    found: list[str] = []
    targets, known_specs = makefile_targets(), specs()
    cmds = all_commands()
    made = created_paths(cmds)
    for c in cmds:
        prog, args = program(c.words)
        for w in (prog, *args):
            for p in named_paths(w):
                if (c.where.split(":")[0], p) not in made and not path_exists(p):
                    found.append(f"{c.where}: names {p}, which does not exist")
        if prog == "make":
            for t in (a for a in args if not a.startswith("-") and "=" not in a):
                if t not in targets:
                    found.append(f"{c.where}: `make {t}`: no such target in the Makefile")
        for k, a in enumerate(args[:-1]):
            if a == "--spec" and args[k + 1] not in known_specs and not args[k + 1].endswith((".yml", ".yaml")) \
                    and "$" not in args[k + 1]:
                found.append(f"{c.where}: --spec {args[k + 1]}: no such spec in dataset_builders/specs/")
        own = own_entry(prog, args)
        if own is None:
            continue
        entry, rest = own
        if entry[0] != "-m" and not (ROOT / entry[0]).is_file():
            continue  # reported above as a missing path
        text = help_text(*entry)
        for a in rest:
            if a.startswith("--"):
                flag = a.split("=", 1)[0]
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    found.append(f"{c.where}: `{' '.join(entry)}` has no flag {flag}")
    return found


def test_the_docs_contain_commands_to_check():
    cmds = all_commands()
    wheres = {c.where.split(":")[0] for c in cmds}
    assert len(cmds) > 60 and {"README.md", "recipes/README.md", "scripts/convert.py"} <= wheres


def test_every_named_file_recipe_spec_target_and_flag_exists():
    found = problems()
    assert not found, "the docs name things that do not exist:\n" + "\n".join(found)


def test_inline_paths_in_the_docs_exist():
    """Repository paths named in prose (`recipes/x.yml`, `scripts/y.py`) exist too."""
    found = []
    made = {p for _, p in created_paths(all_commands())}  # e.g. serve/.env, copied from its example
    for doc in [*DOCS, *USAGE_FILES]:
        text = doc.read_text(encoding="utf-8")
        if doc.suffix == ".py":
            text = ast.get_docstring(ast.parse(text)) or ""
        for span in re.findall(r"`([^`\n]+)`", text) if doc.suffix == ".md" else [text]:
            for p in named_paths(span):
                if p not in made and not path_exists(p):
                    found.append(f"{rel(doc)}: {p}")
    assert not found, "missing files named in the docs:\n" + "\n".join(sorted(set(found)))


@pytest.mark.parametrize("doc", [
    "```bash\n.venv/bin/python scripts/convert.py recipes/qlora-0.5b.yml\n```\n",
    "```bash\n.venv/bin/python scripts/convert.py recipes/qwen3b-physics.yml --no-such-flag\n```\n",
    "```bash\nmake no-such-target\n```\n",
    "```bash\n.venv/bin/python -m dataset_builders build --spec no-such-spec --input x --out y\n```\n",
])
def test_the_check_fails_on_a_doc_that_names_what_does_not_exist(tmp_path, monkeypatch, doc):
    bad = tmp_path / "README.md"
    bad.write_text(doc)
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [bad])
    monkeypatch.setattr(sys.modules[__name__], "USAGE_FILES", [])
    all_commands.cache_clear()
    try:
        assert len(problems()) == 1
    finally:
        all_commands.cache_clear()
