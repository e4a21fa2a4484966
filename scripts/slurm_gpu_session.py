"""Issue 18's GPU session in one command: a two-node Slurm cluster on a two-GPU host, the product swept through
it, the checks on what it wrote, and a scancel and a requeue mid-point.

    python3 scripts/slurm_gpu_session.py OUT            # on a lent two-GPU host, as root (docs/slurm.md)

OUT gets: host.txt (OS, loader, GPUs and their device files' UUIDs), cluster-up.log, srun.txt, one folder per
sweep (`main`, `kill`) with its results and the sweep's output, sacct.txt, checks.json (every check, its
expected and seen values and its outcome) and session.log. The cluster is `scripts/slurm-gpu-cluster.sh`
(node1 owns the first device file, node2 the second). If it does not come up, its logs go to OUT/slurm-logs
and the same shards=2 point runs as two "nodes" of one host instead (`python -m energybench.point` twice, with
torchrun's variables and SLURMD_NODENAME=node1/node2), with the same checks.

Every sweep reads power limits only (power.backend=none power.policy=observe): a lent GPU's settings are
never changed. --extra KEY=VALUE ... goes to every sweep (a CPU rehearsal: device=cpu model=tiny
with the fake NVML, see tests/test_slurm_gpu_session.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLUSTER = REPO / "scripts" / "slurm-gpu-cluster.sh"
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
OBSERVE = ("power.backend=none", "power.policy=observe")
SACCT_FORMAT = "JobID,JobName,State,ExitCode,NodeList,AllocTRES,Start,End,Elapsed"


class Session:
    def __init__(self, out: Path, deadline_s: float) -> None:
        self.out = out
        self.end = time.monotonic() + deadline_s
        self.env = {**os.environ, **MULTICAST_OFF, "PYTHONUNBUFFERED": "1"}
        self.checks: list[dict] = []

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}"
        print(line, flush=True)
        with open(self.out / "session.log", "a") as f:
            f.write(line + "\n")

    def left_s(self) -> float:
        return self.end - time.monotonic()

    def sh(self, cmd: list[str], timeout_s: float = 60, **kw) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                  timeout=max(1.0, min(timeout_s, self.left_s())), **kw)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(cmd, 124, _text(e.stdout), _text(e.stderr) + "\n(timed out)")
        except OSError as e:  # a command this host lacks (nvidia-smi on a CPU rehearsal)
            return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: {e.strerror}")

    def check(self, name: str, ok: bool, expected: object, seen: object) -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "expected": expected, "seen": seen})
        self.log(f"check {'PASS' if ok else 'FAIL'}: {name}: expected {expected!r}, seen {seen!r}")
        return ok

    def save_checks(self) -> None:
        """checks.json: every check, with the commit, host and command that made them."""
        from energybench import provenance

        record = {**provenance.record(), "command": " ".join(["python3", *sys.argv]),
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checks": self.checks}
        (self.out / "checks.json").write_text(json.dumps(record, indent=1, default=str) + "\n")


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


# ---- facts --------------------------------------------------------------------------------------------------


def gpu_uuids_by_minor() -> dict[int, str]:
    """{device minor: GPU UUID} from the NVIDIA driver's /proc files (the device file /dev/nvidiaN has minor N)."""
    found = {}
    for info in Path("/proc/driver/nvidia/gpus").glob("*/information"):
        text = info.read_text()
        minor = re.search(r"Device Minor:\s*(\d+)", text)
        uuid = re.search(r"GPU UUID:\s*(\S+)", text)
        if minor and uuid:
            found[int(minor.group(1))] = uuid.group(1)
    return found


def expected_uuids(gpu_files: list[str], given: str | None) -> dict[str, str]:
    """{node: UUID of the GPU Slurm gives it}: node<i+1> owns gpu_files[i] (scripts/slurm-gpu-cluster.sh)."""
    if given:
        return dict(pair.split("=", 1) for pair in given.split(","))
    by_minor = gpu_uuids_by_minor()
    return {f"node{i + 1}": by_minor.get(int(re.sub(r"\D", "", f) or -1), "?") for i, f in enumerate(gpu_files)}


def host_facts(s: Session) -> None:
    parts = []
    for cmd in (["cat", "/etc/os-release"], ["ldd", "--version"], ["id"], ["nproc"], ["nvidia-smi", "-L"],
                ["sh", "-c", "grep -H 'GPU UUID\\|Device Minor' /proc/driver/nvidia/gpus/*/information"],
                ["sh", "-c", "ls -l /dev/nvidia*"]):
        r = s.sh(cmd, 30)
        parts.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    (s.out / "host.txt").write_text("\n".join(parts))


# ---- the cluster ------------------------------------------------------------------------------------------


def cluster_up(s: Session) -> bool:
    r = s.sh([str(CLUSTER), "up"], 300)
    (s.out / "cluster-up.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        s.log(f"cluster did not come up (rc {r.returncode}): {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        logs = Path(os.environ.get("ENERGYBENCH_SLURM_BASE", "/var/tmp/energybench-gpu-slurm")) / "log"
        if logs.is_dir():
            shutil.copytree(logs, s.out / "slurm-logs", dirs_exist_ok=True)
        return False
    env_line = s.sh([str(CLUSTER), "env"]).stdout
    m = re.match(r"export PATH=(\S+):\$PATH SLURM_CONF=(\S+)", env_line.strip())
    s.env["PATH"] = f"{m.group(1)}:{s.env['PATH']}"
    s.env["SLURM_CONF"] = m.group(2)
    s.log("cluster up")
    return True


def srun_check(s: Session, expect: dict[str, str], gpu_files: list[str], rehearsal: bool) -> None:
    """Each node's task gets CUDA_VISIBLE_DEVICES = its device file's number, and (on GPUs) nvidia-smi names the
    UUID of that GPU; a rehearsal's stand-in devices have no nvidia-smi, so there only the numbers count."""
    r = s.sh(["srun", "-N2", "--ntasks-per-node=1", "--gpus-per-task=1", "sh", "-c",
              'echo "$SLURMD_NODENAME $CUDA_VISIBLE_DEVICES $(nvidia-smi --query-gpu=uuid --format=csv,noheader '
              '-i $CUDA_VISIBLE_DEVICES 2>/dev/null || echo none)"'], 120)
    (s.out / "srun.txt").write_text(r.stdout + r.stderr)
    want = {f"node{i + 1}": f"{re.sub(r'[^0-9]', '', f)} {'none' if rehearsal else expect.get(f'node{i + 1}')}"
            for i, f in enumerate(gpu_files)}
    seen = {}
    for line in r.stdout.splitlines():
        node, _, rest = line.partition(" ")
        seen[node] = rest
    s.check("srun -N2 --gpus-per-task=1: each node's task sees the GPU Slurm gave it (index, UUID)",
            r.returncode == 0 and seen == want, want, seen)


# ---- sweeps ---------------------------------------------------------------------------------------------


def sweep_cmd(out_dir: Path, name: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "energybench.sweep", "-m", "cluster=slurm", "cluster.partition=gpu",
            "cluster.gpus_per_node=1", *OBSERVE, *args, f"out_dir={out_dir}", f"sweep={name}"]


def run_sweep(s: Session, folder: Path, name: str, args: list[str], log_name: str, timeout_s: float) -> int:
    cmd = sweep_cmd(folder, name, args)
    s.log("$ " + " ".join(cmd[1:]))
    r = s.sh(cmd, timeout_s, cwd=folder.parent)
    (folder.parent / log_name).write_text(r.stdout + r.stderr)
    s.log(f"sweep rc {r.returncode}: {summary_line(r.stdout + r.stderr)}")
    return r.returncode


def summary_line(text: str) -> str:
    hits = [ln.strip() for ln in text.splitlines() if re.search(r"\d+ done, \d+ failed", ln)]
    return hits[-1] if hits else (text.strip().splitlines() or ["(no output)"])[-1]


def points(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/point=*"))


def seed_of(pdir: Path) -> int:
    import yaml

    return int(yaml.safe_load((pdir / "config.yaml").read_text())["seed"])


# ---- checks on what a sweep wrote -----------------------------------------------------------------------


def check_point(s: Session, pdir: Path, expect: dict[str, str]) -> None:
    """energy = Σ gpus.parquet; each node's GPU is the one Slurm gave it; each node's samples hold its GPU only."""
    import pyarrow.parquet as pq

    from energybench.results.samples import read_samples

    pid = pdir.name.removeprefix("point=")
    row = pq.read_table(pdir / "run.parquet").to_pylist()[0]
    gpus = pq.read_table(pdir / "gpus.parquet").to_pylist()
    tag = f"{row['model']} shards={row['shards']} seed={row['seed']} ({pid[:8]}, job {row['slurm_job_id']})"
    total = sum(g["energy_j"] for g in gpus)
    s.check(f"{tag}: energy_j equals the sum of gpus.parquet", abs(row["energy_j"] - total) <= 1e-6 * total,
            round(total, 3), round(row["energy_j"], 3))
    by_node = {g["node"]: g["gpu_uuid"] for g in gpus}
    nodes = row["hostnames"].split(",")
    s.check(f"{tag}: one GPU per node, the one Slurm gave that node", len(gpus) == len(nodes)
            and all(by_node.get(n) == expect.get(n) for n in nodes), {n: expect.get(n) for n in nodes}, by_node)
    samples = read_samples(pdir).to_pandas()
    seen = {str(n): sorted(map(str, g["gpu_uuid"].unique())) for n, g in samples.groupby("node")}
    folders = sorted(p.name for p in (pdir / "samples").iterdir())
    s.check(f"{tag}: samples/node=<name>/ per node, each holding only its own GPU",
            folders == [f"node={n}" for n in sorted(nodes)] and all(seen.get(n) == [expect.get(n)] for n in nodes),
            {n: [expect.get(n)] for n in nodes}, {"folders": folders, "uuids": seen})
    if row["shards"] == 2:
        s.check(f"{tag}: a shards=2 point spans both nodes", (row["nodes"], row["hostnames"]) == (2, "node1,node2"),
                (2, "node1,node2"), (row["nodes"], row["hostnames"]))


def check_sweep(s: Session, folder: Path, expect: dict[str, str]) -> None:
    for pdir in points(folder):
        if (pdir / "run.parquet").exists():
            check_point(s, pdir, expect)
        else:
            s.check(f"{pdir.name}: a result", False, "run.parquet", "none")


# ---- scancel and requeue mid-point ------------------------------------------------------------------------


def wait_until(s: Session, what: str, test, timeout_s: float) -> bool:
    end = time.monotonic() + min(timeout_s, s.left_s())
    while time.monotonic() < end:
        if test():
            return True
        time.sleep(0.5)
    s.log(f"timed out waiting for {what}")
    return False


def measuring(folder: Path, seed: int, attempt: int = 1) -> Path | None:
    """The point of `seed` once it streams batches of `attempt` and has no result yet."""
    from energybench.results.store import read_status

    for pdir in points(folder):
        try:
            if seed_of(pdir) != seed or not (pdir / "batches.parquet").exists() or (pdir / "run.parquet").exists():
                continue
            st = read_status(pdir) or {}
        except (OSError, ValueError, KeyError):
            continue
        if st.get("state") == "running" and st.get("attempt", 1) == attempt and st.get("slurm_job_id"):
            return pdir
    return None


def kill_test(s: Session, args: list[str], expect: dict[str, str]) -> None:
    """Two shards=2 points (seeds 11, 12: they take both nodes in turn): scancel the first mid-generation and
    scontrol requeue the second mid-generation; the sweep waits for the requeued run; a re-run redoes only the
    cancelled point."""
    import pyarrow.parquet as pq

    from energybench.results.store import read_status

    folder = s.out / "kill" / "results"
    folder.mkdir(parents=True)
    cmd = sweep_cmd(folder, "kill", [*args, "seed=11,12"])
    s.log("$ " + " ".join(cmd[1:]) + " &")
    with open(s.out / "kill" / "sweep.log", "w") as logf:
        proc = subprocess.Popen(cmd, env=s.env, cwd=folder.parent, stdout=logf, stderr=subprocess.STDOUT, text=True)
        try:
            actions = []
            found: dict[int, Path] = {}

            def seen(seed: int) -> bool:  # keeps the point it found: a second look may come after its end
                pdir = measuring(folder, seed)
                if pdir is not None:
                    found[seed] = pdir
                return pdir is not None

            if wait_until(s, "seed=11 measuring", lambda: seen(11), 240):
                job = (read_status(found[11]) or {}).get("slurm_job_id")
                s.sh(["scancel", str(job)])
                actions.append(f"scancel {job} (seed=11) at {time.strftime('%H:%M:%S', time.gmtime())}")
                s.log(actions[-1])
            if wait_until(s, "seed=12 measuring", lambda: seen(12), 240):
                job = (read_status(found[12]) or {}).get("slurm_job_id")
                s.sh(["scontrol", "requeue", str(job)])
                actions.append(f"scontrol requeue {job} (seed=12) at {time.strftime('%H:%M:%S', time.gmtime())}")
                s.log(actions[-1])
            proc.wait(timeout=max(1.0, s.left_s() - 60))
        except subprocess.TimeoutExpired:
            s.log("kill sweep ran out of time: SIGTERM")
            proc.terminate()
            proc.wait(timeout=60)
    (s.out / "kill" / "actions.txt").write_text("\n".join(actions) + "\n")
    log = (s.out / "kill" / "sweep.log").read_text()
    s.log(f"kill sweep rc {proc.returncode}: {summary_line(log)}")
    s.check("kill sweep: 1 done (the requeued point), 1 failed (the cancelled one)",
            "1 done, 1 failed, 0 skipped" in log, "1 done, 1 failed, 0 skipped", summary_line(log))
    by_seed = {seed_of(p): p for p in points(folder)}
    if 11 in by_seed:
        st = read_status(by_seed[11]) or {}
        files = sorted(f.name for f in by_seed[11].iterdir() if f.suffix == ".parquet")
        readable = all(_reads(f) for f in by_seed[11].rglob("*.parquet"))
        s.check("seed=11 (scancel): failed, reason names CANCELLED, no run.parquet, its Parquet files read back",
                st.get("state") == "failed" and "CANCELLED" in str(st.get("reason")) and "run.parquet" not in files
                and readable, "failed/CANCELLED/readable", {"state": st.get("state"), "reason": st.get("reason"),
                                                            "files": files, "all_read": readable})
    if 12 in by_seed:
        st = read_status(by_seed[12]) or {}
        row = pq.read_table(by_seed[12] / "run.parquet").to_pylist()[0] if (by_seed[12] / "run.parquet").exists() else {}
        batches = by_seed[12] / "batches.parquet"
        attempts = sorted(set(pq.read_table(batches).column("attempt").to_pylist())) if batches.exists() else []
        s.check("seed=12 (requeue): done in attempt 2, batches of both attempts kept",
                (st.get("state"), st.get("attempt"), row.get("attempt"), attempts) == ("done", 2, 2, [1, 2]),
                ("done", 2, 2, [1, 2]), (st.get("state"), st.get("attempt"), row.get("attempt"), attempts))
        if row:
            check_point(s, by_seed[12], expect)
    if s.left_s() < 120:
        s.log("no time left for the re-run")
        return
    done_at = (by_seed[12] / "run.parquet").stat().st_mtime if 12 in by_seed and (by_seed[12] / "run.parquet").exists() else None
    rc = run_sweep(s, folder, "kill", [*args, "seed=11,12"], "rerun.log", s.left_s() - 60)
    log = (s.out / "kill" / "rerun.log").read_text()
    st11 = (read_status(by_seed[11]) or {}) if 11 in by_seed else {}
    s.check("re-run: seed=11 measured again and done, seed=12 skipped as done",
            rc == 0 and "1 done, 0 failed, 1 skipped" in log and st11.get("state") == "done"
            and done_at is not None and (by_seed[12] / "run.parquet").stat().st_mtime == done_at,
            "1 done, 0 failed, 1 skipped", summary_line(log))
    if 11 in by_seed and (by_seed[11] / "run.parquet").exists():
        check_point(s, by_seed[11], expect)


def _reads(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
        return True
    except Exception:  # noqa: BLE001 (any failure to read is the finding)
        return False


def sacct_lines(s: Session) -> None:
    time.sleep(2)  # slurmdbd records an end a moment after it
    r = s.sh(["sacct", "-a", "-P", "-S", "now-1days", "-o", SACCT_FORMAT])
    (s.out / "sacct.txt").write_text(r.stdout + r.stderr)


# ---- the fallback: two "nodes" of one host without Slurm ----------------------------------------------------


def two_process_point(s: Session, args: list[str], expect: dict[str, str]) -> None:
    folder = s.out / "fallback" / "results"
    folder.mkdir(parents=True)
    procs, logs = [], []
    for rank in (0, 1):
        env = {**s.env, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "GROUP_RANK": str(rank), "NUM_NODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511",
               "SLURMD_NODENAME": f"node{rank + 1}", "ENERGYBENCH_NODELIST": "node1,node2",
               "CUDA_VISIBLE_DEVICES": str(rank), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        cmd = [sys.executable, "-m", "energybench.point", *OBSERVE, *args, "shards=2", f"out_dir={folder}",
               "sweep=fallback"]
        s.log(f"$ SLURMD_NODENAME=node{rank + 1} RANK={rank} " + " ".join(cmd[1:]))
        logs.append(open(folder.parent / f"rank{rank}.log", "w"))
        procs.append(subprocess.Popen(cmd, env=env, cwd=folder.parent, stdout=logs[-1], stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=max(1.0, s.left_s()))
    except subprocess.TimeoutExpired:
        s.log("fallback point ran out of time: SIGTERM to both ranks")
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    finally:
        for f in logs:
            f.close()
    s.check("fallback point: both ranks exited 0", [p.returncode for p in procs] == [0, 0], [0, 0],
            [p.returncode for p in procs])
    check_sweep(s, folder, expect)


# ---- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", default="7b,13b")
    ap.add_argument("--point-args", default="batch=64 samples=64 max_tokens=64",
                    help="KEY=VALUE ... of the main sweep's points")
    ap.add_argument("--kill-args", default="model=7b batch=64 samples=256 max_tokens=128 meter.flush_s=1",
                    help="KEY=VALUE ... of the two shards=2 points the kill test stops")
    ap.add_argument("--expect", default=None, help="node1=UUID,node2=UUID (default: the device files' UUIDs)")
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--keep-up", action="store_true", help="leave the cluster running")
    ap.add_argument("--rehearsal", action="store_true",
                    help="stand-in GPU device files (no nvidia-smi): the srun check compares device numbers only")
    ap.add_argument("--extra", default="", help="KEY=VALUE ... for every sweep (a CPU rehearsal: device=cpu ...)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    s = Session(out, args.deadline_s)
    gpu_files = os.environ.get("ENERGYBENCH_SLURM_GPU_FILES", "/dev/nvidia0 /dev/nvidia1").split()
    expect = expected_uuids(gpu_files, args.expect)
    host_facts(s)
    s.log(f"expected GPU of each node: {expect}")
    extra = args.extra.split()
    point_args = [*args.point_args.split(), *extra]
    try:
        if cluster_up(s):
            srun_check(s, expect, gpu_files, args.rehearsal)
            main_dir = out / "main" / "results"
            main_dir.mkdir(parents=True)
            rc = run_sweep(s, main_dir, "slurm-gpus", [f"model={args.models}", "shards=1,2", *point_args],
                           "sweep.log", s.left_s() - 30)
            log = (out / "main" / "sweep.log").read_text()
            n = 2 * len(args.models.split(","))
            s.check("main sweep: every point done", rc == 0 and f"{n} done, 0 failed" in log,
                    f"{n} done, 0 failed", summary_line(log))
            check_sweep(s, main_dir, expect)
            s.save_checks()
            kill_test(s, [*args.kill_args.split(), "shards=2", *extra], expect)
            sacct_lines(s)
        else:
            # no Slurm: cluster.* keys are Slurm's and a point outside it refuses them
            two_process_point(s, [f"model={args.models.split(',')[0]}",
                                  *[a for a in point_args if not a.startswith("cluster.")]], expect)
    finally:
        s.save_checks()
        if not args.keep_up:  # whatever time is left: the daemons it started must stop
            down = subprocess.run([str(CLUSTER), "down"], env=s.env, capture_output=True, text=True, timeout=120)
            (out / "cluster-down.log").write_text(down.stdout + down.stderr)
    failed = [c["check"] for c in s.checks if not c["ok"]]
    s.log(f"{len(s.checks) - len(failed)} of {len(s.checks)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 0 if s.checks and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
