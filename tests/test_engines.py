"""The shard map on a real engine and a real bucket client: a local Ray cluster (head and two
worker nodes on loopback, started here), arXiv-style shards and manifest served by a local
S3-compatible server (moto) and read with s3fs, requester-pays included, and the Slurm job
scripts run as Slurm would run them. Every route must give the local route's output byte for
byte; a worker killed mid-shard must cost neither a shard nor a duplicate."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from dataset_builders import cli
from dataset_builders.fulltext.remote import month_key, parse_months
from dataset_builders.records import InputError
from qwenphysics.core.llama_server import LlamaServer, free_port
from tests.test_builders_fulltext import eprint, files_of, meta, paper_tex, write_meta, write_shard

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "arxiv-mirror"
KEY_ID = "AKIATESTKEYQWENPHYS"
SECRET = "s3cr3t-never-logged-0123456789abcdef"


# ----------------------------------------------------------------------------- fixtures

def write_corpus(root: Path, months: dict[str, int], papers: int) -> dict:
    """Shards `arXiv_src_<yymm>_NNN.tar` of `papers` e-prints each, and their metadata."""
    recs, k = [], 0
    for yymm, shards in months.items():
        for s in range(shards):
            members = {}
            for _ in range(papers):
                aid = f"{yymm}.{k:05d}"
                title = f"Gap structure number {k} in layered superconductors"
                members[f"{yymm}/{aid}.gz"] = eprint(paper_tex(k, title))
                recs.append(meta(aid, title, categories="cond-mat.supr-con"))
                k += 1
            write_shard(root / "src" / f"arXiv_src_{yymm}_{s + 1:03d}.tar", members)
    return {"src": root / "src", "metadata": write_meta(root / "meta.jsonl", recs), "root": root}


def manifest_xml(src: Path) -> bytes:
    """arXiv's manifest format: one <file> per shard with its month, size and MD5."""
    entries = []
    for i, p in enumerate(sorted(src.glob("*.tar")), 1):
        data = p.read_bytes()
        yymm = p.name.split("_")[2]
        entries.append(f"<file><content_md5sum>0</content_md5sum><filename>src/{p.name}</filename>"
                       f"<first_item>{yymm}.00000</first_item><last_item>{yymm}.99999</last_item>"
                       f"<md5sum>{hashlib.md5(data).hexdigest()}</md5sum><num_items>1</num_items>"
                       f"<seq_num>{i}</seq_num><size>{len(data)}</size><timestamp>2024-03-01 00:00:00</timestamp>"
                       f"<yymm>{yymm}</yymm></file>")
    return ("<?xml version='1.0' standalone='yes'?>\n<arXivSRC>\n" + "\n".join(entries) + "\n</arXivSRC>\n").encode()


def run_build(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataset_builders", "build", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer_built):
    """Two months of shards (2401: one, 2402: three), big enough that a shard takes a moment."""
    return write_corpus(tmp_path_factory.mktemp("engine-corpus"), {"2401": 1, "2402": 3}, papers=1500)


@pytest.fixture(scope="module")
def local_out(corpus, tmp_path_factory):
    """The reference: the local route, one process, all four shards."""
    out = tmp_path_factory.mktemp("engine-local") / "out"
    p = run_build("--spec", "fulltext-completion", "--input", str(corpus["src"]), "--metadata",
                  str(corpus["metadata"]), "--out", str(out), "--workers", "1")
    assert p.returncode == 0, p.stderr
    return files_of(out)


@pytest.fixture(scope="module")
def s3(corpus, tmp_path_factory):
    """moto's S3 server on loopback holding the shards and the manifest under src/, the
    bucket set to charge the requester; the AWS variables point every client at it."""
    rec = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    port = free_port()
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(rec)}
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    aws = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url, "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)  # Ray nodes started after this inherit it, as cluster nodes would have it
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_request_payment(Bucket=BUCKET, RequestPaymentConfiguration={"Payer": "Requester"})
    for p in sorted(corpus["src"].glob("*.tar")):
        client.put_object(Bucket=BUCKET, Key=f"src/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket=BUCKET, Key="src/arXiv_src_manifest.xml", Body=manifest_xml(corpus["src"]))
    requests.post(url + "/moto-api/recorder/reset-recording", timeout=5)
    yield {"url": url, "recording": rec, "env": {**os.environ}}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(timeout=30)


def recorded(s3) -> list[dict]:
    return [json.loads(x) for x in s3["recording"].read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def ray_cluster(s3):
    """A real Ray cluster on loopback: a head with no CPUs (it schedules only) and two one-CPU
    worker nodes, each its own raylet and worker processes."""
    from ray.cluster_utils import Cluster  # noqa: PLC0415 - slow import, this fixture only

    # every node and driver on 127.0.0.1: Ray otherwise swaps a loopback address for the host's
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
    for _ in range(2):
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)


def splits(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.endswith(".jsonl")}


def leftovers(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "shards").glob("*.tmp-*"))


# ----------------------------------------------------------------------------- fast

def test_months_parse_and_order_the_1990s_before_the_2000s():
    assert parse_months("2301-2312") == (202301, 202312)
    assert parse_months("9107") == (199107, 199107)
    assert month_key("9912") < month_key("0001")
    for bad in ("23", "2313", "2312-2301", "2301..2302"):
        with pytest.raises(InputError) as e:
            parse_months(bad)
        assert "--months" in str(e.value) and "\n" not in str(e.value)


def test_engine_options_are_checked_in_one_line_before_any_work(tmp_path, tokenizer_built):
    src = write_corpus(tmp_path, {"2402": 1}, papers=2)
    base = ["--spec", "fulltext-completion", "--input", str(src["src"]), "--metadata", str(src["metadata"])]
    cases = [
        (["--months", "2313"], "--months 2313"),
        (["--months", "2301"], "no source shard falls in --months"),
        (["--ray-address", "127.0.0.1:1"], "--ray-address is for --executor ray"),
        (["--slurm-option", "partition=x"], "--slurm-option is for --executor slurm"),
        (["--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}"], "cannot reach the Ray cluster"),
    ]
    for i, (extra, expected) in enumerate(cases):
        out = tmp_path / f"out{i}"
        p = run_build(*base, "--out", str(out), *extra, timeout=120)
        assert p.returncode == 2, (extra, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("dataset_builders: error:") and expected in last, (extra, p.stderr)
        assert "Traceback" not in p.stderr and not out.exists()


def test_metadata_specs_refuse_the_engine_flags(tmp_path, capsys):
    for extra in (["--executor", "ray"], ["--months", "2401"], ["--requester-pays"], ["--qa-batch", "4"],
                  ["--slurm-option", "partition=cpu"]):
        assert cli.main(["build", "--spec", "abstracts-chat", "--input", str(tmp_path / "none.jsonl"),
                         "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and extra[0] in err[0] and "abstracts-chat" in err[0], err
    assert not (tmp_path / "o").exists()


def test_months_select_local_shards_by_name(tmp_path, tokenizer_built):
    src = write_corpus(tmp_path, {"2401": 1, "2402": 2}, papers=3)
    p = run_build("--spec", "fulltext-completion", "--input", str(src["src"]), "--metadata", str(src["metadata"]),
                  "--out", str(tmp_path / "out"), "--months", "2402", "--workers", "1")
    assert p.returncode == 0, p.stderr
    shards = re.findall(r"\] (arXiv_src_\d+_\d+\.tar):", p.stderr)
    assert shards == ["arXiv_src_2402_001.tar", "arXiv_src_2402_002.tar"]
    units = json.loads((tmp_path / "out" / "manifest.json").read_text())["fulltext"]["units"]
    assert [u["input"] for u in units] == shards


# ----------------------------------------------------------------------------- slow: Ray, S3, Slurm

@pytest.mark.slow
def test_ray_cluster_gives_the_local_output_and_resumes(tmp_path, corpus, local_out, ray_cluster):
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--spec", "fulltext-completion", "--input", str(corpus["src"]), "--metadata", str(corpus["metadata"]),
            "--out", str(out), "--work-dir", str(work), "--executor", "ray", "--ray-address", ray_cluster.address]
    p = run_build(*args)
    assert p.returncode == 0, p.stderr
    assert "executor ray" in p.stderr and len(re.findall(r"\[shard \d/4\].*1500 cleaned", p.stderr)) == 4
    assert files_of(out) == local_out
    done = [json.loads(f.read_text()) for f in sorted((work / "shards").glob("*.done"))]
    assert len(done) == 4 and all(d["bytes_in"] > 0 and d["bytes_out"] > 0 and d["cpu_seconds"] > 0 for d in done)
    again = run_build(*args)  # every shard is done: nothing is sent to the cluster
    assert again.returncode == 0, again.stderr
    assert len(re.findall(r"\] \S+: done earlier", again.stderr)) == 4 and files_of(out) == local_out


@pytest.mark.slow
def test_a_worker_killed_mid_shard_loses_and_duplicates_nothing(tmp_path, corpus, local_out, ray_cluster):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "dataset_builders", "build", "--no-progress", "--spec",
                             "fulltext-completion", "--input", str(corpus["src"]), "--metadata",
                             str(corpus["metadata"]), "--out", str(out), "--work-dir", str(work),
                             "--executor", "ray", "--ray-address", ray_cluster.address],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 240
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        for tmp in (work / "shards").glob("*.jsonl.tmp-*"):  # a shard half written by this worker process
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed = (pid, tmp.name.split(".")[0])
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "no shard was caught half written: " + err[-2000:]
    assert proc.returncode == 0, err
    assert files_of(out) == local_out  # a lost shard, or a paper twice, would change counts and splits
    lines = re.findall(r"\[shard \d/4\] (\S+): 1500 papers", err)
    assert sorted(lines) == sorted(p.name for p in corpus["src"].glob("*.tar"))  # each reported once
    assert (work / "shards" / f"{killed[1]}.done").exists() and leftovers(work) == []


@pytest.mark.slow
def test_the_bucket_via_manifest_and_months_with_requester_pays(tmp_path, corpus, s3):
    local = tmp_path / "local"
    p = run_build("--spec", "fulltext-completion", "--input", str(corpus["src"]), "--metadata",
                  str(corpus["metadata"]), "--out", str(local), "--months", "2402", "--workers", "1")
    assert p.returncode == 0, p.stderr
    requests.post(s3["url"] + "/moto-api/recorder/reset-recording", timeout=5)
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--spec", "fulltext-completion", "--input", f"s3://{BUCKET}/src/", "--metadata",
            str(corpus["metadata"]), "--out", str(out), "--work-dir", str(work), "--months", "2402",
            "--requester-pays", "--workers", "2"]
    p = run_build(*args, env=s3["env"])
    assert p.returncode == 0, p.stderr
    mine, theirs = files_of(out), files_of(local)
    assert splits(mine) == splits(theirs)  # the card and manifest name the inputs, which differ
    m, ref = json.loads(mine["manifest.json"]), json.loads(theirs["manifest.json"])
    assert m["counts"] == ref["counts"] and m["fulltext"] == ref["fulltext"]
    assert m["inputs"][0] == {"path": f"s3://{BUCKET}/src/"}
    gets = [r for r in recorded(s3) if r["method"] == "GET"]
    shard_gets = [r for r in gets if ".tar" in r["url"]]
    assert {re.search(r"arXiv_src_\d+_\d+\.tar", r["url"]).group(0) for r in shard_gets} == \
           {"arXiv_src_2402_001.tar", "arXiv_src_2402_002.tar", "arXiv_src_2402_003.tar"}  # 2401 never read
    for r in gets:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        assert headers.get("x-amz-request-payer") == "requester", r["url"]
    # the secret is in no log, output or work file
    for text in [p.stdout, p.stderr, *[b.decode("utf-8", "replace") for b in mine.values()],
                 *[f.read_text(errors="replace") for f in work.rglob("*") if f.is_file() and f.suffix != ".jsonl"]]:
        assert SECRET not in text and KEY_ID not in text
    # a rerun fetches nothing: the manifest's MD5 and size say each shard is done
    requests.post(s3["url"] + "/moto-api/recorder/reset-recording", timeout=5)
    again = run_build(*args, env=s3["env"])
    assert again.returncode == 0 and len(re.findall(r"\] \S+: done earlier", again.stderr)) == 3, again.stderr
    assert not [r for r in recorded(s3) if ".tar" in r["url"]]


@pytest.mark.slow
def test_bucket_errors_are_one_line(tmp_path, corpus, s3):
    no_creds = {k: v for k, v in s3["env"].items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    no_creds.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    cases = [
        (s3["env"], f"s3://{BUCKET}/src/arXiv_src_9901_001.tar", "input not found"),
        (s3["env"], f"s3://{BUCKET}/elsewhere/", "input not found"),
        (no_creds, f"s3://{BUCKET}/src/", "no AWS credentials"),
    ]
    for i, (env, url, expected) in enumerate(cases):
        p = run_build("--spec", "fulltext-completion", "--input", url, "--metadata", str(corpus["metadata"]),
                      "--out", str(tmp_path / f"o{i}"), env=env, timeout=120)
        assert p.returncode == 2, (url, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert expected in last and "Traceback" not in p.stderr and SECRET not in p.stderr, (url, p.stderr)


@pytest.mark.slow
def test_ray_cluster_reading_the_bucket_gives_the_local_output(tmp_path, corpus, local_out, s3, ray_cluster):
    """The whole route at once: shards from the bucket's manifest, cleaned on the cluster into
    a work dir in the bucket (no shared file system needed), reduced here."""
    out = tmp_path / "out"
    args = ["--spec", "fulltext-completion", "--input", f"s3://{BUCKET}/src/arXiv_src_manifest.xml",
            "--metadata", str(corpus["metadata"]), "--out", str(out), "--requester-pays",
            "--work-dir", f"s3://{BUCKET}/work/fulltext", "--executor", "ray", "--ray-address", ray_cluster.address]
    p = run_build(*args, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    keys = sorted(o["Key"] for o in boto3.client("s3", endpoint_url=s3["url"], region_name="us-east-1")
                  .list_objects_v2(Bucket=BUCKET, Prefix="work/fulltext/")["Contents"])
    assert len(keys) == 12 and {k.rsplit(".", 1)[1] for k in keys} == {"jsonl", "ids", "done"}
    again = run_build(*args, "--out", str(tmp_path / "again"), env=dict(os.environ))
    assert again.returncode == 0 and len(re.findall(r"\] \S+: done earlier", again.stderr)) == 4, again.stderr
    assert splits(files_of(tmp_path / "again")) == splits(local_out)
    mine = files_of(out)
    assert splits(mine) == splits(local_out)
    m, ref = json.loads(mine["manifest.json"]), json.loads(local_out["manifest.json"])
    assert m["counts"] == ref["counts"] and m["fulltext"] == ref["fulltext"]


@pytest.mark.slow
def test_slurm_scripts_run_as_slurm_runs_them(tmp_path, corpus, local_out):
    """No Slurm daemons here: the scripts are run by bash with the variables Slurm sets."""
    out, work = tmp_path / "out", tmp_path / "work"
    p = run_build("--spec", "fulltext-completion", "--input", str(corpus["src"]), "--metadata",
                  str(corpus["metadata"]), "--out", str(out), "--work-dir", str(work), "--executor", "slurm",
                  "--slurm-option", "partition=cpu", "--slurm-option=--time=02:00:00",
                  env={**os.environ, "PATH": str(tmp_path / "no-slurm-here")})
    assert p.returncode == 0, p.stderr
    assert "sbatch is not on PATH" in p.stderr and not out.exists()
    map_script, reduce_script = work / "slurm" / "map.sbatch", work / "slurm" / "reduce.sbatch"
    text = map_script.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--array=0-3" in directives and "--partition=cpu" in directives and "--time=02:00:00" in directives
    assert "--partition=cpu" in re.findall(r"^#SBATCH (\S+)", reduce_script.read_text(), re.M)
    for script in (map_script, reduce_script):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for task in range(4):
        r = subprocess.run(["bash", str(map_script)], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    assert len(list((work / "shards").glob("*.done"))) == 4 and not out.exists()
    r = subprocess.run(["bash", str(reduce_script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"\] \S+: done earlier", r.stderr)) == 4 and files_of(out) == local_out



# ----------------------------------------------------------------------------- slow: the teacher on Ray

@pytest.mark.slow
def test_teacher_questions_asked_in_batches_on_ray(tmp_path, qa_build):
    """physics-qa with --executor ray: each Ray task asks the teacher server for a batch of
    papers: the papers the local route asks about, no more, no fewer. (A teacher's sampled
    answers differ between servers with different slots, so the outputs are compared for
    the same answers: the local route rerun on the cache the Ray route filled.)"""
    with LlamaServer(qa_build.gguf, parallel=2, log=tmp_path / "teacher.log") as server:
        env = {**os.environ, "QP_TEACHER_KEY": server.api_key}
        cmd = ["--spec", str(qa_build.spec), "--input", str(qa_build.input), "--teacher-url", server.base_url,
               "--teacher-key-env", "QP_TEACHER_KEY", "--executor", "ray", "--workers", "2", "--qa-batch", "4"]
        cache = tmp_path / "c.sqlite"
        p = run_build(*cmd, "--out", str(tmp_path / "ray"), "--teacher-cache", str(cache), env=env, timeout=600)
        assert p.returncode == 0, p.stderr
        batches = re.findall(r"\[qa batch (\d+)/(\d+)\] (\d+) papers: (\d+) answered", p.stderr)
        assert len(batches) >= 2 and len({b[1] for b in batches}) == 1 and len(batches) == int(batches[0][1])
        asked = sum(int(b[2]) for b in batches)
        m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
        t = m["teacher"]
        answered = sum(int(b[3]) for b in batches)
        assert t["papers_answered_from_cache"] == answered and t["papers_asked"] == asked - answered
        assert api_key_absent(server.api_key, tmp_path)
        local = json.loads((qa_build.out / "manifest.json").read_text())
        assert asked == local["teacher"]["papers_asked"] and m["counts"]["read"] == local["counts"]["read"]
        # the same command again: every answer is cached, nothing goes to Ray
        again = run_build(*cmd, "--out", str(tmp_path / "again"), "--teacher-cache", str(cache), env=env)
        assert again.returncode == 0 and "nothing to ask on the cluster" in again.stderr, again.stderr
        assert splits(files_of(tmp_path / "again")) == splits(files_of(tmp_path / "ray"))
        # the local route on the answers the cluster fetched: asks nothing, writes the same
        loc = run_build("--spec", str(qa_build.spec), "--input", str(qa_build.input), "--teacher-url",
                        server.base_url, "--teacher-key-env", "QP_TEACHER_KEY", "--teacher-cache", str(cache),
                        "--out", str(tmp_path / "local"), env=env)
        assert loc.returncode == 0, loc.stderr
        lt = json.loads((tmp_path / "local" / "manifest.json").read_text())["teacher"]
        assert lt["requests_sent"] == 0 and splits(files_of(tmp_path / "local")) == splits(files_of(tmp_path / "ray"))
    bad = run_build("--spec", str(qa_build.spec), "--input", str(qa_build.input), "--teacher-gguf",
                    str(qa_build.gguf), "--executor", "ray", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "give --teacher-url" in bad.stderr.strip().splitlines()[-1]


def api_key_absent(key: str, root: Path) -> bool:
    return all(key not in f.read_text(errors="replace") for f in root.rglob("*")
               if f.is_file() and f.suffix in (".json", ".md", ".jsonl", ".log") and f.name != "teacher.log")


# ----------------------------------------------------------------------------- slow: a real Slurm, where installed

SLURM_CONF = """ClusterName=qwenphysics-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on loopback (munge, slurmctld, slurmd on private sockets, ports and
    state), where Debian's slurm-wlm and munge are installed and the tests run as root."""
    tools = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing or os.geteuid() != 0 or not Path("/etc/munge/munge.key").exists():
        pytest.skip("a local Slurm needs slurm-wlm and munge installed (Debian: apt-get install slurm-wlm munge) "
                    "and root to start their daemons; the job scripts are still run by bash in "
                    "test_slurm_scripts_run_as_slurm_runs_them")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(ctld=free_port(), slurmd=free_port(), root=root))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = [subprocess.Popen(["munged", "-F", "--force", f"--socket={root}/munge.socket",
                               f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
                               f"--log-file={root}/munged.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(1)
    procs.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost", "-f", str(conf)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout:
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("the local Slurm did not come up: " + (root / "slurmctld.log").read_text()[-2000:])
        time.sleep(0.5)
    yield env
    for p in reversed(procs):
        p.terminate()
        p.wait(timeout=30)


@pytest.mark.slow
def test_a_real_slurm_runs_the_array_then_the_reduce(tmp_path, corpus, local_out, slurm):
    out, work = tmp_path / "out", tmp_path / "work"
    p = run_build("--spec", "fulltext-completion", "--input", str(corpus["src"]), "--metadata",
                  str(corpus["metadata"]), "--out", str(out), "--work-dir", str(work), "--executor", "slurm",
                  "--slurm-option", "partition=cpu", env=slurm)
    assert p.returncode == 0, p.stderr
    m = re.search(r"job array (\d+) and the reduce as job (\d+)", p.stderr)
    assert m, p.stderr
    deadline = time.monotonic() + 300
    while subprocess.run(["squeue", "-h", "-j", f"{m.group(1)},{m.group(2)}"], env=slurm, capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(1)
    logs = sorted(p.name for p in (work / "slurm" / "logs").iterdir())
    assert [x for x in logs if x.startswith("map-")] == [f"map-{m.group(1)}_{i}.out" for i in range(4)]
    reduce_log = (work / "slurm" / "logs" / f"reduce-{m.group(2)}.out").read_text()
    assert len(re.findall(r"\] \S+: done earlier", reduce_log)) == 4, reduce_log
    assert files_of(out) == local_out
