"""Where the shard map runs: `--executor local | ray | slurm`, one call of `shards.process_shard`
per unit whichever it is, so every route writes the same work dir and the reduce that follows
gives the same output byte for byte.

* `local`: this machine's processes (`shards.run_map`, `--workers N`).
* `ray`:   one Ray task per unit on a running cluster (`--ray-address`, or `RAY_ADDRESS`), or
           on a Ray started here for the run with `--workers` CPUs. A task whose worker process
           or node dies is run again (up to `RAY_RETRIES` times); since a unit's files are
           written under temporary names and its marker last, a unit is never half-written
           or counted twice. Results come back to this process, which then reduces.
* `slurm`: writes a job array (`<work>/slurm/map.sbatch`, each array task runs
           `python -m dataset_builders map-units` for its share of the units) and a reduce
           job (`reduce.sbatch`, the same build run with `--executor local` once the array is
           over, which finds every unit done and only reduces, or redoes the few that
           failed), and submits both with `sbatch` when it is on PATH.

The work dir must be one place every worker sees: a folder on the cluster's shared file
system, or a URL (`remote.RemotePath`; not for Slurm, whose plan and scripts live there). Units
already done (a matching `.done` marker) are skipped by every route, so a rerun, or another
route, picks up where a run stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cluster import as_completed, ray_address, ray_session, reachable
from ..latex import Limits
from ..records import InputError
from .inputs import Unit
from .remote import Access, WorkPath
from .shards import ShardResult, plan, remove_leftovers, run_map, unit_task

EXECUTORS = ("local", "ray", "slurm")
RAY_RETRIES = 3
SLURM_MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001


def run_ray(units: list[Unit], work_dir: WorkPath, limits: Limits, keep_appendix: bool, *, workers: int,
            log: Callable[[str], None], access: Access, address: str | None = None) -> list[ShardResult]:
    """The map as Ray tasks; results in unit order, progress in completion order."""
    work_dir = work_dir.resolve()
    p = plan(units, work_dir, limits, keep_appendix, log)
    if not p.todo:
        return p.ordered()
    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(unit_task)
        pending = {task.remote(u, str(work_dir), limits, keep_appendix, access): u for u in p.todo}
        for unit, r in as_completed(ray, pending, lambda u: u.label):
            p.results[unit.name] = r
            log(f"{p.position(unit.name)} {r.line()}")
    remove_leftovers(work_dir, units)
    return p.ordered()


@dataclass(frozen=True)
class Engine:
    """The map's executor and its settings, as the command line gave them."""

    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    access: Access = field(default_factory=Access)
    months: tuple[int, int] | None = None
    slurm_options: tuple[str, ...] = ()
    reduce_argv: tuple[str, ...] = ()  # the build command the Slurm reduce job runs

    def check(self) -> None:
        if self.executor not in EXECUTORS:
            raise InputError(f"--executor {self.executor}: choose one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise InputError("--workers must be at least 1")
        if self.ray_address and self.executor != "ray":
            raise InputError("--ray-address is for --executor ray")
        if self.slurm_options and self.executor != "slurm":
            raise InputError("--slurm-option is for --executor slurm")
        if self.executor == "ray" and (address := ray_address(self.ray_address)):
            reachable(address)
        if self.executor == "slurm" and not self.reduce_argv:
            raise InputError("--executor slurm runs from the command line (python -m dataset_builders build ...)")

    def run(self, units: list[Unit], work_dir: WorkPath, limits: Limits, keep_appendix: bool,
            log: Callable[[str], None]) -> list[ShardResult] | None:
        """The map's results in unit order; None when the map was handed to Slurm."""
        if self.executor == "ray":
            return run_ray(units, work_dir, limits, keep_appendix, workers=self.workers, log=log, access=self.access,
                           address=ray_address(self.ray_address))
        if self.executor == "slurm":
            if not isinstance(work_dir, Path):
                raise InputError("--executor slurm needs a --work-dir on the cluster's shared file system, not a URL")
            p = plan(units, work_dir, limits, keep_appendix, log)
            if not p.todo:
                return p.ordered()
            mp, rp, tasks = write_slurm(units, work_dir.parent, limits, keep_appendix, self.access,
                                        list(self.reduce_argv), list(self.slurm_options), len(p.todo))
            log(f"wrote {mp} ({tasks} array tasks for {len(p.todo)} units) and {rp}")
            submit(mp, rp, log)
            return None
        return run_map(units, work_dir, limits, keep_appendix, self.workers, log, self.access)


# ----------------------------------------------------------------------------- Slurm

def write_plan(units: list[Unit], work_dir: Path, limits: Limits, keep_appendix: bool, access: Access) -> Path:
    folder = work_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.json"
    data = {"work_dir": str(work_dir.resolve() / "shards"), "limits": asdict(limits), "keep_appendix": keep_appendix,
            "access": asdict(access), "units": [asdict(u) for u in units]}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def read_plan(path: Path) -> tuple[list[Unit], Path, Limits, bool, Access]:
    try:
        d = json.loads(Path(path).read_text())
        units = [Unit(**{**u, "paths": tuple(u["paths"])}) for u in d["units"]]
        return units, Path(d["work_dir"]), Limits(**d["limits"]), bool(d["keep_appendix"]), Access(**d["access"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a map plan written by --executor slurm ({type(e).__name__})") from None


def map_units(plan_path: Path, task: int, tasks: int, log: Callable[[str], None]) -> list[ShardResult]:
    """One array task's share of a plan: units task, task + tasks, ... not done yet."""
    if tasks < 1 or not 0 <= task < tasks:
        raise InputError(f"task {task} of {tasks}: give 0 <= TASK < TASKS")
    units, work, limits, keep_appendix, access = read_plan(plan_path)
    mine = units[task::tasks]
    return run_map(mine, work, limits, keep_appendix, 1, log, access)


def _sbatch(name: str, directives: list[str], body: list[str]) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", *[f"#SBATCH {d}" for d in directives],
             "set -euo pipefail", *body, ""]
    return "\n".join(lines)


def write_slurm(units: list[Unit], work_dir: Path, limits: Limits, keep_appendix: bool, access: Access,
                reduce_argv: list[str], options: list[str], todo: int) -> tuple[Path, Path, int]:
    """The array and reduce scripts (paths, array size)."""
    plan_path = write_plan(units, work_dir, limits, keep_appendix, access)
    folder = plan_path.parent
    tasks = max(1, min(todo, SLURM_MAX_ARRAY))
    cwd = shlex.quote(os.getcwd())
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    env = ["export TOKENIZERS_PARALLELISM=false", f"cd {cwd}"]
    extra = [o if o.startswith("--") else f"--{o}" for o in options]
    map_script = _sbatch("qwenphysics-map", [f"--array=0-{tasks - 1}", "--cpus-per-task=1", "--requeue",
                                             f"--output={logs}/map-%A_%a.out", *extra],
                         [*env, f"exec {shlex.quote(sys.executable)} -m dataset_builders map-units "
                                f"{shlex.quote(str(plan_path))} --task \"$SLURM_ARRAY_TASK_ID\" --tasks {tasks}"])
    reduce_script = _sbatch("qwenphysics-reduce", ["--cpus-per-task=1", f"--output={logs}/reduce-%j.out", *extra],
                            [*env, "exec " + shlex.join(reduce_argv)])
    mp, rp = folder / "map.sbatch", folder / "reduce.sbatch"
    mp.write_text(map_script)
    rp.write_text(reduce_script)
    return mp, rp, tasks


def submit(map_script: Path, reduce_script: Path, log: Callable[[str], None]) -> None:
    """Submit the array, then the reduce after it; without `sbatch` on PATH, say how to."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        log(f"sbatch is not on PATH: submit on the cluster with\n  JOB=$(sbatch --parsable {map_script})\n"
            f"  sbatch --dependency=afterany:$JOB {reduce_script}")
        return
    try:
        job = subprocess.run([sbatch, "--parsable", str(map_script)], check=True, capture_output=True,
                             text=True).stdout.strip().split(";")[0]
        red = subprocess.run([sbatch, "--parsable", f"--dependency=afterany:{job}", str(reduce_script)],
                             check=True, capture_output=True, text=True).stdout.strip().split(";")[0]
    except subprocess.CalledProcessError as e:
        said = (e.stderr or "").strip().splitlines()
        raise InputError(f"sbatch refused the job: {said[-1] if said else e}") from None
    log(f"submitted the map as job array {job} and the reduce as job {red} (after the array); "
        f"follow with: squeue -j {job},{red}")
