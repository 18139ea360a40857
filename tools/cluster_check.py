"""Runs the toy study on a real Slurm cluster of one node (127.0.0.1 only, started here and
stopped at the end) as `helixlab slurm` writes it, writing to an S3-compatible server (moto's
server mode, also on 127.0.0.1), and checks the shard contract end to end:

- every job runs as if on a node of its own: an empty private cache (a tmpfs mounted in the
  job's own mount namespace) at a path of its own, so the jobs meet only through the bucket,
  where the model is read from too;
- the sharded stages (accuracy, extract, patch, patch-last, both phases of components, and
  neurons) run as 4-task arrays on 2 fake GPUs: two tasks at once, with different
  CUDA_VISIBLE_DEVICES (read from the shards' commits);
- one extract task dies mid-work (the HELIXLAB_ABORT_AFTER_BATCHES hook, an abort like kill
  -9); the chain after it waits; resubmitting that index alone (`sbatch --array=2`) reruns that
  shard only (the other commits are untouched), and the chain goes on once its dependency is
  pointed at the retry;
- a committed shard run again is skipped, and of two attempts racing on one new shard exactly
  one commits (create-only put) while the other is refused;
- every table in the bucket equals the single-machine run's (tools/same_tables.py), and
  polars, pyarrow and DuckDB read them from s3:// with the single run's row counts.

    python tools/cluster_check.py HELIXLAB SINGLE_PIPELINE SINGLE_RUN

Needs root (mknod for the fake GPUs, munged as the munge user, mount namespaces), the
slurm-wlm and munge packages and tools/requirements-cluster.txt (make cluster-check installs
them).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

CONF = """ClusterName=helixlab-check
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmctldPort=16917
SlurmdPort=16918
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 Gres=gpu:2 State=UNKNOWN
PartitionName=check Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
GRES = "NodeName=localhost Name=gpu File=/dev/helixlab-fakegpu[0-1]\n"
DEVICES = [pathlib.Path(f"/dev/helixlab-fakegpu{i}") for i in range(2)]


def stat(pid):
    """The state letter of a process (Z: a zombie, gone but for its parent's wait)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def sh(*args, env=None, check=True):
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({out.returncode}):\n"
                         f"{out.stdout}{out.stderr}")
    return out.stdout


class Cluster:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="helixlab-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.started_munged = False

    def start(self):
        for sub in ["state", "spool"]:
            (self.dir / sub).mkdir()
        self.conf.write_text(CONF.format(d=self.dir))
        (self.dir / "gres.conf").write_text(GRES)
        for i, dev in enumerate(DEVICES):
            if not dev.exists():
                sh("mknod", str(dev), "c", "1", "3")
        running = subprocess.run(["pgrep", "-x", "munged"], capture_output=True, text=True)
        alive = [p for p in running.stdout.split() if stat(p) != "Z"]
        if not alive or not pathlib.Path("/run/munge/munge.socket.2").exists():
            pathlib.Path("/run/munge").mkdir(exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            sh("runuser", "-u", "munge", "--", "munged")
            self.started_munged = True
        sh("slurmctld", env=self.env)
        sh("slurmd", "-N", "localhost", env=self.env)
        for _ in range(60):
            state = sh("sinfo", "-h", "-o", "%t", env=self.env, check=False).strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise SystemExit(f"the node never came up (sinfo: {state!r}); "
                         f"logs in {self.dir}:\n{(self.dir / 'slurmd.log').read_text()[-2000:]}")

    def queued(self, jobs):
        """The (job, state, reason) rows of squeue for these job ids."""
        out = sh("squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T %r", env=self.env,
                 check=False)
        return [line.split(None, 2) for line in out.splitlines() if line.strip()]

    def wait(self, jobs, until, what, timeout=600, stuck_ok=False):
        start = time.time()
        stuck = None
        while time.time() - start < timeout:
            rows = self.queued(jobs)
            if until(rows):
                return rows
            # A job that failed leaves the chain after it pending for ever: stop once that has
            # lasted (a dependency just updated may read stuck for a moment).
            if not stuck_ok and any("DependencyNeverSatisfied" in r[2] for r in rows):
                stuck = stuck or time.time()
                if time.time() - stuck > 15:
                    raise SystemExit(f"a job failed while waiting for {what}: {rows}")
            else:
                stuck = None
            time.sleep(0.5)
        raise SystemExit(f"timed out waiting for {what}: {self.queued(jobs)}")

    def stop(self):
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        pids = []
        for daemon in ["slurmd", "slurmctld"]:
            pid = self.dir / f"{daemon}.pid"
            if pid.exists() and pid.read_text().strip().isdigit():
                pids.append(int(pid.read_text().strip()))
        if self.started_munged:
            out = subprocess.run(["pgrep", "-x", "munged"], capture_output=True, text=True)
            pids += [int(p) for p in out.stdout.split()]
        for sig in ["TERM", "KILL"]:
            for pid in pids:
                subprocess.run(["kill", f"-{sig}", str(pid)], capture_output=True)
            deadline = time.time() + 10
            while time.time() < deadline and any(pathlib.Path(f"/proc/{p}").exists()
                                                 and "Z" not in stat(p) for p in pids):
                time.sleep(0.2)
        for dev in DEVICES:
            dev.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


S3_PORT = 16919
BUCKET = "helixlab-check"
PREFIX = "runs/toy"


class S3:
    """moto's S3 server on 127.0.0.1, with the bucket the study writes to."""

    def __init__(self, log):
        self.endpoint = f"http://127.0.0.1:{S3_PORT}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "check",
                    "AWS_SECRET_ACCESS_KEY": "check", "AWS_REGION": "us-east-1"}
        self.proc = subprocess.Popen(
            [str(pathlib.Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
             "-p", str(S3_PORT)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
        import boto3
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="check", aws_secret_access_key="check")
        for _ in range(100):
            try:
                self.client.create_bucket(Bucket=BUCKET)
                return
            except Exception:
                time.sleep(0.2)
        raise SystemExit(f"the S3 server never answered; log {log}")

    def keys(self, prefix):
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                      Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def download(self, prefix, to):
        for key in self.keys(prefix + "/"):
            path = to / key[len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(BUCKET, key, str(path))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def commits(s3, stage):
    keys = [k for k in s3.keys(f"{PREFIX}/shards/{stage}/") if k.endswith(".commit.json")]
    sets = {k.rsplit("/", 1)[0] for k in keys if "-of-4/" in k}
    assert len(sets) == 1, f"one 4-shard set of {stage}: {sets}"
    out = {}
    for k in keys:
        if "-of-4/" in k:
            body = s3.client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            out[int(re.search(r"part-(\d+)", k).group(1))] = body
    return out


def queries(s3, single_run):
    """Row counts of every table read from s3:// by polars, pyarrow and DuckDB, against the
    single run's files read locally."""
    import glob
    import duckdb
    import polars as pl
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    host = s3.endpoint.removeprefix("http://")
    opts = {"aws_endpoint_url": s3.endpoint, "aws_access_key_id": "check",
            "aws_secret_access_key": "check", "aws_region": "us-east-1",
            "aws_allow_http": "true"}
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key="check",
                           secret_key="check", region="us-east-1", scheme="http")
    ext = glob.glob(str(pathlib.Path(duckdb.__file__).parent.parent / "duckdb_extension_httpfs"
                        / "extensions" / "*" / "httpfs.duckdb_extension"))[0]
    db = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    db.execute(f"LOAD '{ext}'")
    db.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'check', SECRET 'check', REGION 'us-east-1', "
               f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
    wrong = []
    tables = [k for k in s3.keys(PREFIX + "/") if k.endswith(".parquet")]
    for key in tables:
        rel = key[len(PREFIX) + 1:]
        want = pq.read_metadata(single_run / rel).num_rows
        url = f"s3://{BUCKET}/{key}"
        got = {"polars": pl.scan_parquet(url, storage_options=opts).select(pl.len()).collect()
               .item(),
               "pyarrow": pq.read_table(f"{BUCKET}/{key}", filesystem=fs).num_rows,
               "duckdb": db.execute(f"select count(*) from read_parquet('{url}')").fetchone()[0]}
        if any(v != want for v in got.values()):
            wrong.append(f"{rel}: {got}, the single run has {want}")
    # The activations as one hive dataset, the way the README queries them.
    url = f"s3://{BUCKET}/{PREFIX}/activations/*/*/*.parquet"
    hive = db.execute(f"select count(*) from read_parquet('{url}', hive_partitioning=true)"
                      ).fetchone()[0]
    want = sum(pq.read_metadata(p).num_rows for p in single_run.glob("activations/*/*/*.parquet"))
    if hive != want:
        wrong.append(f"activations as a hive dataset: {hive} rows, the single run has {want}")
    return len(tables), wrong


def main():
    helixlab, single_pipeline, single_run = map(pathlib.Path, sys.argv[1:4])
    helixlab = helixlab.resolve()
    failed = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failed.append(what)

    cluster = Cluster()
    started = time.time()
    s3 = None
    try:
        cluster.start()
        s3 = S3(cluster.dir / "s3.log")
        print(f"cluster and S3 server up in {time.time() - started:.1f} s ({cluster.dir})")
        cache = cluster.dir / "cache"
        cache.mkdir()
        env = dict(cluster.env, **s3.env, HELIXLAB_CACHE=str(cache))
        study = cluster.dir / "study.toml"
        # The model too comes from the bucket (read-only).
        model = pathlib.Path("data/models/toy-adder")
        for f in model.iterdir():
            s3.client.upload_file(str(f), BUCKET, f"models/toy-adder/{f.name}")
        text = re.sub(r'(?m)^dir = ".*runs/check"', f'dir = "s3://{BUCKET}/{PREFIX}"',
                      single_pipeline.read_text())
        text = text.replace(f'dir = "{model}"', f'dir = "s3://{BUCKET}/models/toy-adder"')
        study.write_text(text)
        assert f'"s3://{BUCKET}/{PREFIX}"' in text and "/models/toy-adder\"" in text, text
        script = cluster.dir / "submit.sh"
        logs = cluster.dir / "logs"
        sh(str(helixlab), "slurm", "--pipeline", str(study), "--shards", "4", "--gpus", "1",
           "--out", str(script), "--logs", str(logs), env=env)
        # The binary the jobs run: each in a mount namespace of its own with an empty cache;
        # extract's array index 2 dies after one batch, once.
        flag = cluster.dir / "killed-once"
        wrapper = cluster.dir / "helixlab"
        # HELIXLAB_CHECK_SHARED_CACHE=1 runs the fallback on a machine that has namespaces.
        private = not os.environ.get("HELIXLAB_CHECK_SHARED_CACHE") and subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {cache}"],
            capture_output=True).returncode == 0
        if not private:
            print("note: no mount namespaces here; the jobs' caches are directories of one disk")
        # Each job's cache is at a path of its own too (as on nodes whose scratch differs), so
        # the manifests must not depend on where a machine keeps the run.
        own = 'export HELIXLAB_CACHE="$HELIXLAB_CACHE/job-${SLURM_JOB_ID:-local}"'
        isolate = ("exec unshare -m sh -c 'mount -t tmpfs tmpfs \"$HELIXLAB_CACHE\" && "
                   f"{own} && exec \"$0\" \"$@\"' " if private else f"{own}; exec ")
        wrapper.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = extract ] && [ "${{SLURM_ARRAY_TASK_ID:-}}" = 2 ] && [ ! -e {flag} ]; '
            f"then touch {flag}; export HELIXLAB_ABORT_AFTER_BATCHES=1; fi\n"
            f'{isolate}{helixlab} "$@"\n')
        wrapper.chmod(0o755)
        out = sh("bash", str(script), env=dict(env, HELIXLAB=str(wrapper)))
        jobs = dict(line.split() for line in out.splitlines() if line.strip())
        print(f"submitted {len(jobs)} jobs: {' '.join(jobs)}")
        # The extract array ends (task 2 failed); the gather after it is stuck.
        cluster.wait([jobs["extract"]], lambda rows: not rows, "the extract array",
                     stuck_ok=True)
        rows = cluster.wait([jobs["gather-extract"]], lambda rows: rows and
                            "DependencyNeverSatisfied" in rows[0][2], "the stuck gather",
                            stuck_ok=True)
        check(True, f"extract task 2 died; the gather after it waits ({rows[0][2]})")
        acc = commits(s3, "accuracy")
        ext = commits(s3, "extract")
        check(sorted(acc) == [0, 1, 2, 3], f"accuracy: 4 shards committed ({sorted(acc)})")
        check(sorted(ext) == [0, 1, 3], f"extract: shards 0, 1, 3 committed ({sorted(ext)})")
        spans = [json.loads(b) for b in acc.values()]
        together = [(a["shard"]["index"], b["shard"]["index"], a["cuda_visible_devices"],
                     b["cuda_visible_devices"]) for a in spans for b in spans
                    if a["shard"]["index"] < b["shard"]["index"]
                    and a["started_unix"] < b["committed_unix"]
                    and b["started_unix"] < a["committed_unix"]]
        check(any(x[2] and x[3] and x[2] != x[3] for x in together),
              f"two accuracy tasks ran at once on different GPUs: {together}")
        # Resubmit index 2 alone, with the script's own command; point the chain at it.
        retry = sh("sbatch", "--parsable", "--array=2", "--gres=gpu:1", f"--chdir={os.getcwd()}",
                   f"--output={logs}/extract-retry-%a.out",
                   f"--wrap={wrapper} extract --pipeline {study} --shards 4",
                   env=env).strip().split(";")[0]
        sh("scontrol", "update", f"JobId={jobs['gather-extract']}",
           f"Dependency=afterok:{retry}", env=env)
        cluster.wait(list(jobs.values()) + [retry], lambda rows: not rows, "the rest of the chain")
        after = commits(s3, "extract")
        check(sorted(after) == [0, 1, 2, 3], "extract: all 4 shards committed after the retry")
        check(all(after[i] == b for i, b in ext.items()),
              "the retry reran shard 2 only (the commits of 0, 1 and 3 are unchanged)")
        retried = json.loads(after[2])
        check(retried["scheduler_job"].startswith(f"{retry}_"),
              f"shard 2 was committed by the retry ({retried['scheduler_job']})")
        fresh = dict(env, HELIXLAB_CACHE=str(cluster.dir / "cache-again"))
        again = sh(str(helixlab), "extract", "--pipeline", str(study), "--shard", "1/4", env=fresh)
        check("committed already" in again, "a committed shard run again is skipped")
        # Two attempts at one new shard (extract as 1 shard), each on its own "node".
        racers = [subprocess.Popen([str(wrapper), "extract", "--pipeline", str(study),
                                    "--shard", "0/1"], env=dict(env), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(r.wait(), *r.communicate()) for r in racers]
        won = [r for r in results if r[0] == 0 and "committed to" in r[1]]
        lost = [r for r in results if r[0] != 0 and "refused" in r[2]]
        skipped = [r for r in results if r[0] == 0 and "committed already" in r[1]]
        check(len(won) == 1 and len(lost) + len(skipped) == 1,
              f"of two racing attempts one commits: {len(won)} committed, {len(lost)} refused, "
              f"{len(skipped)} skipped ({[r[2][-200:] for r in results if r[0] != 0]})")
        for stage in ["patch", "patch-last", "components/phase-1", "components/phase-2",
                      "neurons"]:
            got = sorted(commits(s3, stage))
            check(got == [0, 1, 2, 3], f"{stage}: 4 shards committed ({got})")
        check(not any(k.endswith(("component_singles.parquet", "lens_directions.parquet"))
                      for k in s3.keys(PREFIX + "/")),
              "the phase tables of components and neurons are folded and removed from the bucket")
        check(any(k.endswith("report/index.html") for k in s3.keys(PREFIX + "/report/")),
              "the chain ran to the report (in the bucket)")
        downloaded = cluster.dir / "downloaded"
        s3.download(PREFIX, downloaded)
        same = subprocess.run([sys.executable, "tools/same_tables.py", str(single_run),
                               str(downloaded)], capture_output=True, text=True)
        check(same.returncode == 0, "every table in the bucket equals the single-machine run's: "
              + (same.stdout + same.stderr).strip()[-300:])
        # The README's snippet for querying a study in place, against the bucket.
        readme = pathlib.Path("README.md").read_text()
        section = readme.split("## Across machines", 1)[1].split("\n## ", 1)[0]
        snippets = re.findall(r"```python\n(.*?)```", section, re.S)
        saved = dict(os.environ)
        os.environ.update(s3.env, AWS_ALLOW_HTTP="true", HELIXLAB_RUN=f"s3://{BUCKET}/{PREFIX}")
        try:
            for i, code in enumerate(snippets):
                exec(compile(code, f"README 'Across machines' snippet {i + 1}", "exec"), {})
            check(len(snippets) == 1, f"the README's s3:// query snippet ran ({len(snippets)})")
        except Exception as e:  # noqa: BLE001 - name the snippet that broke
            check(False, f"the README's s3:// query snippet raised {e!r}")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        n, wrong = queries(s3, single_run)
        check(n > 0 and not wrong, f"polars, pyarrow and DuckDB read {n} tables from s3:// with "
              f"the single run's row counts {wrong[:3]}")
    finally:
        logs = cluster.dir / "logs"
        if (failed or sys.exc_info()[0]) and logs.exists():
            for log in sorted(logs.glob("*.out")):
                print(f"--- {log.name}\n{log.read_text()[-800:]}")
        if s3:
            s3.stop()
        cluster.stop()
    print(f"cluster check: {time.time() - started:.0f} s, {len(failed)} failures")
    sys.exit(1 if failed else 0)


main()
