"""Runs the toy study on a real Slurm cluster of one node (127.0.0.1 only, started here and
stopped at the end) as `helixlab slurm` writes it, and checks the shard contract end to end:

- the sharded stages run as 4-task arrays on 2 fake GPUs: two tasks at once, with different
  CUDA_VISIBLE_DEVICES (read from the shards' commits);
- one extract task dies mid-work (the HELIXLAB_ABORT_AFTER_BATCHES hook, an abort like kill
  -9); the chain after it waits; resubmitting that index alone (`sbatch --array=2`) reruns that
  shard only (the other commits are untouched), and the chain goes on once its dependency is
  pointed at the retry;
- a committed shard run again is skipped;
- every table of the run equals the single-machine run's (tools/same_tables.py).

    python tools/cluster_check.py HELIXLAB SINGLE_PIPELINE SINGLE_RUN

Needs root (mknod for the fake GPUs, munged as the munge user) and the slurm-wlm and munge
packages (make cluster-check installs them). Python's standard library only, plus pyarrow for
same_tables.py.
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
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
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

    def wait(self, jobs, until, what, timeout=600):
        start = time.time()
        while time.time() - start < timeout:
            rows = self.queued(jobs)
            if until(rows):
                return rows
            time.sleep(0.5)
        raise SystemExit(f"timed out waiting for {what}: {self.queued(jobs)}")

    def stop(self):
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        for daemon in ["slurmd", "slurmctld"]:
            pid = self.dir / f"{daemon}.pid"
            if pid.exists():
                subprocess.run(["kill", pid.read_text().strip()], capture_output=True)
        if self.started_munged:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)
        time.sleep(1)
        for dev in DEVICES:
            dev.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def commits(run, stage):
    sets = list((run / "shards" / stage).glob("*-of-4"))
    assert len(sets) == 1, f"one shard set of {stage}: {sets}"
    return {int(re.search(r"part-(\d+)", p.name).group(1)): p
            for p in sets[0].glob("part-*.commit.json")}


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
    try:
        cluster.start()
        print(f"cluster up in {time.time() - started:.1f} s ({cluster.dir})")
        run = cluster.dir / "run"
        study = cluster.dir / "study.toml"
        study.write_text(re.sub(r'(?m)^dir = ".*runs/check"', f'dir = "{run}"',
                                single_pipeline.read_text()))
        assert f'dir = "{run}"' in study.read_text(), "the study's output dir was replaced"
        script = cluster.dir / "submit.sh"
        sh(str(helixlab), "slurm", "--pipeline", str(study), "--shards", "4", "--gpus", "1",
           "--out", str(script))
        # The binary the jobs run: extract's array index 2 dies after one batch, once.
        flag = cluster.dir / "killed-once"
        wrapper = cluster.dir / "helixlab"
        wrapper.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = extract ] && [ "${{SLURM_ARRAY_TASK_ID:-}}" = 2 ] && [ ! -e {flag} ]; '
            f"then touch {flag}; export HELIXLAB_ABORT_AFTER_BATCHES=1; fi\n"
            f'exec {helixlab} "$@"\n')
        wrapper.chmod(0o755)
        out = sh("bash", str(script), env=dict(cluster.env, HELIXLAB=str(wrapper)))
        jobs = dict(line.split() for line in out.splitlines() if line.strip())
        print(f"submitted {len(jobs)} jobs: {' '.join(jobs)}")
        # The extract array ends (task 2 failed); the gather after it is stuck.
        cluster.wait([jobs["extract"]], lambda rows: not rows, "the extract array")
        rows = cluster.wait([jobs["gather-extract"]], lambda rows: rows and
                            "DependencyNeverSatisfied" in rows[0][2], "the stuck gather")
        check(True, f"extract task 2 died; the gather after it waits ({rows[0][2]})")
        acc = commits(run, "accuracy")
        ext = commits(run, "extract")
        check(sorted(acc) == [0, 1, 2, 3], f"accuracy: 4 shards committed ({sorted(acc)})")
        check(sorted(ext) == [0, 1, 3], f"extract: shards 0, 1, 3 committed ({sorted(ext)})")
        spans = [json.loads(p.read_text()) for p in acc.values()]
        together = [(a["shard"]["index"], b["shard"]["index"], a["cuda_visible_devices"],
                     b["cuda_visible_devices"]) for a in spans for b in spans
                    if a["shard"]["index"] < b["shard"]["index"]
                    and a["started_unix"] < b["committed_unix"]
                    and b["started_unix"] < a["committed_unix"]]
        check(any(x[2] and x[3] and x[2] != x[3] for x in together),
              f"two accuracy tasks ran at once on different GPUs: {together}")
        before = {i: p.read_bytes() for i, p in ext.items()}
        # Resubmit index 2 alone, with the script's own command; point the chain at it.
        retry = sh("sbatch", "--parsable", "--array=2", "--gres=gpu:1", f"--chdir={os.getcwd()}",
                   f"--output={run}/slurm/extract-retry-%a.out",
                   f"--wrap={helixlab} extract --pipeline {study} --shards 4",
                   env=cluster.env).strip().split(";")[0]
        sh("scontrol", "update", f"JobId={jobs['gather-extract']}",
           f"Dependency=afterok:{retry}", env=cluster.env)
        cluster.wait(list(jobs.values()) + [retry], lambda rows: not rows, "the rest of the chain")
        ext = commits(run, "extract")
        check(sorted(ext) == [0, 1, 2, 3], f"extract: all 4 shards committed after the retry")
        check(all(ext[i].read_bytes() == b for i, b in before.items()),
              "the retry reran shard 2 only (the commits of 0, 1 and 3 are unchanged)")
        retried = json.loads(ext[2].read_text())
        check(retried["scheduler_job"].startswith(f"{retry}_"),
              f"shard 2 was committed by the retry ({retried['scheduler_job']})")
        again = sh(str(helixlab), "extract", "--pipeline", str(study), "--shard", "1/4")
        check("committed already" in again, "a committed shard run again is skipped")
        report = run / "report" / "index.html"
        check(report.exists(), f"the chain ran to the report ({report})")
        same = subprocess.run([sys.executable, "tools/same_tables.py", str(single_run), str(run)],
                              capture_output=True, text=True)
        check(same.returncode == 0, "every table equals the single-machine run's: "
              + (same.stdout + same.stderr).strip()[-400:])
    finally:
        logs = cluster.dir / "run" / "slurm"
        if failed and logs.exists():
            for log in sorted(logs.glob("*.out")):
                print(f"--- {log.name}\n{log.read_text()[-800:]}")
        cluster.stop()
    print(f"cluster check: {time.time() - started:.0f} s, {len(failed)} failures")
    sys.exit(1 if failed else 0)


main()
