"""Full-text training contexts from arXiv LaTeX sources: a parallel, resumable shard map, then
the metadata builder's pipeline (filters, dedup, the shared split, atomic output).

    python -m dataset_builders build --spec fulltext-completion \\
        --input arXiv-src/ --metadata arxiv-metadata-oai-snapshot.json --out data/fulltext-completion \\
        --workers 8

Contexts (specs with `source: fulltext` or `source: mixture`):

* `fulltext-completion` (format completion): token-bounded chunks `{"text", "id", "chunk"}`;
* `sections-chat` (format chat): section instruction pairs `{"messages", "id", "template"}`;
* `mixed` (source mixture): several specs at declared ratios, one subfolder each.

Map (`shards.process_shard`, one call per unit: a bulk `*.tar` shard, an unarXive file, a
group of e-prints or project folders). Each worker streams the unit's papers, cleans them
(`latex.clean_project`), counts tokens of their paragraphs with the Qwen2.5 tokenizer (the
costly part, so it runs here, in parallel) and writes them to the work dir. Memory per
worker is one paper at a time. Work dir (default `<out>.work/`, `--work-dir` to share one
between specs: the map's output does not depend on the spec):

    <work>/shards/<unit>.jsonl   cleaned papers (or their failure reason), in input order
    <work>/shards/<unit>.ids     their ids, for the metadata join
    <work>/shards/<unit>.done    completion marker: fingerprint + counts, written last
    <work>/components/<name>/    a mixture's full component builds (before subsampling)

Resume: a unit whose `.done` fingerprint matches (input names, sizes, mtimes, cleaner
version, limits) is skipped; a unit without one (interrupted, or its marker removed) is
redone from scratch. A progress line per unit (papers, cleaned, seconds) goes to stderr.

Reduce (`mapreduce.py`, `reduce.py`): reads the metadata of the papers that have sources (Kaggle snapshot
or OAI pages, `--metadata` or among `--input`), applies the spec's filters, and feeds the
papers, in unit order, through `pipeline.build(..., source=...)`: output is byte-identical
for any number of workers and across reruns.

Engines (`engine.py`): `--executor local` (the processes above), `ray` (one Ray task per
unit, retried when its worker dies) or `slurm` (a job array, then a reduce job); each calls
`process_shard` per unit and writes the same work dir, so the output is the same byte for
byte. Sources may be URLs read through fsspec (`remote.py`): arXiv's requester-pays bucket,
its manifest and a `--months` range. See dataset_builders/README.md, "Whole arXiv".
"""

from __future__ import annotations

from .inputs import Unit, classify
from .mapreduce import build_fulltext
from .mixture import build_mixture, summarize_mixture
from .shards import ShardResult, process_shard, run_map

__all__ = ["ShardResult", "Unit", "build_fulltext", "build_mixture", "classify", "process_shard", "run_map",
           "summarize_mixture"]
