"""Power caps on the fake NVML: set and verified, refused with nothing changed, always restored."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fake_pynvml import FAKE_GPUS
from energybench.config import PowerConfig
from energybench.distributed import DistEnv, RankError
from energybench.device.nvml import Nvml
from energybench.device.limits import GpuLimit
from energybench.power.cap import apply, power_limits
from energybench.power.state import read_state, state_path

REPO = Path(__file__).resolve().parents[1]

A, B, C = (g["uuid"] for g in FAKE_GPUS)
FOUND = {A: 700.0, B: 700.0, C: 700.0}
ENV = DistEnv(0, 1, 0, 1, 0, 1, "127.0.0.1", 0, socket.gethostname())
SMI = [sys.executable, str(REPO / "tests" / "fake_nvidia_smi.py"), "-i", "{uuid}", "-pl", "{watts}"]


@pytest.fixture
def shared(fake_nvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fake GPUs whose limits live in a file, as other processes (a site command, the CLI) see them."""
    state_file = str(tmp_path / "fake-limits.json")
    fake_nvml.configure(FAKE_GPUS, state_file=state_file)
    spec = fake_nvml.write_spec(tmp_path / "spec.json", FAKE_GPUS, state_file=state_file)
    monkeypatch.setenv("FAKE_NVML_SPEC", str(spec))
    monkeypatch.setenv("FAKE_SMI_LOG", str(tmp_path / "smi.log"))
    return fake_nvml


@pytest.fixture
def gpus(fake_nvml):
    nvml = Nvml()
    yield [nvml.gpu(info) for info in nvml.gpus()]
    nvml.close()


def test_set_verify_then_restore(fake_nvml, gpus, tmp_path: Path) -> None:
    with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, tmp_path) as limits:
        assert fake_nvml.limits_w() == {A: 250.0, B: 250.0, C: 250.0}
        saved = read_state(state_path(tmp_path, ENV.hostname))  # written before any change
        assert {g.uuid: g.limit_w for g in saved.gpus} == FOUND and saved.backend == "nvml"
        assert limits.gpus[B] == GpuLimit(B, 1, 250.0, 700.0, 250.0)
    assert fake_nvml.limits_w() == FOUND
    assert not state_path(tmp_path, ENV.hostname).exists()


def test_restore_after_an_exception(fake_nvml, gpus, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="engine blew up"):
        with power_limits(PowerConfig(backend="nvml"), 225.0, ENV, gpus, tmp_path):
            assert fake_nvml.limits_w()[A] == 225.0
            raise RuntimeError("engine blew up")
    assert fake_nvml.limits_w() == FOUND
    assert not state_path(tmp_path, ENV.hostname).exists()


def test_cap_outside_the_range_is_refused_with_nothing_changed(fake_nvml, tmp_path: Path) -> None:
    fake_nvml.configure([FAKE_GPUS[0], {**FAKE_GPUS[1], "min_limit_w": 300.0}])
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    with pytest.raises(RankError) as e:
        with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, tmp_path):
            pytest.fail("the point must not run")
    assert str(e.value) == (f"node {ENV.hostname}: power_cap=250 W is outside the range GPU 1 ({B}) "
                            "NVIDIA H100 80GB HBM3 allows, 300-700 W; choose a cap in that range")
    assert fake_nvml.calls("nvmlDeviceSetPowerManagementLimit") == []
    assert not state_path(tmp_path, ENV.hostname).exists()
    nvml.close()


def test_no_permission_says_how_to_fix_and_leaves_nothing(fake_nvml, tmp_path: Path) -> None:
    fake_nvml.configure(FAKE_GPUS, allow_set_limit=False)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    with pytest.raises(RankError, match=r"GPU 0 \(GPU-a+.*\): setting the power limit to 250 W needs root .*"
                                        r"power.backend=command"):
        with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, tmp_path):
            pass
    assert fake_nvml.limits_w() == FOUND
    assert not state_path(tmp_path, ENV.hostname).exists()
    nvml.close()


def test_a_failed_read_back_restores_and_fails(fake_nvml, tmp_path: Path) -> None:
    lost = {"nvmlDeviceGetEnforcedPowerLimit": fake_nvml.NVML_ERROR_GPU_IS_LOST}
    fake_nvml.configure([FAKE_GPUS[0], {**FAKE_GPUS[1], "errors": lost}])
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    with pytest.raises(RankError, match=r"GPU 1 .*nvmlDeviceGetEnforcedPowerLimit failed: NVML error 15"):
        with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, tmp_path):
            pytest.fail("the point must not run")
    assert fake_nvml.limits_w() == {A: 700.0, B: 700.0}  # both had been set to 250 W: both put back
    assert len(fake_nvml.calls("nvmlDeviceSetPowerManagementLimit")) == 4
    nvml.close()


def test_command_backend_runs_the_template_without_a_shell(shared, gpus, tmp_path: Path) -> None:
    cfg = PowerConfig(backend="command", command=tuple(SMI))
    with power_limits(cfg, 300.0, ENV, gpus, tmp_path) as limits:
        assert shared.limits_w() == {A: 300.0, B: 300.0, C: 300.0}  # read back through NVML
        assert {lim.enforced_limit_w for lim in limits.gpus.values()} == {300.0}
    assert shared.limits_w() == FOUND
    calls = [json.loads(line) for line in (tmp_path / "smi.log").read_text().splitlines()]
    assert calls == [["-i", u, "-pl", "300"] for u in (A, B, C)] + [["-i", u, "-pl", "700"] for u in (A, B, C)]


def test_failing_command_names_gpu_command_and_error(shared, gpus, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_SMI_FAIL", "1")
    with pytest.raises(RankError, match=r"GPU 0 .* power.command .*fake_nvidia_smi.py.* exited with code 4: "
                                        r"Changing power management limit is not supported"):
        with power_limits(PowerConfig(backend="command", command=tuple(SMI)), 300.0, ENV, gpus, tmp_path):
            pass
    assert shared.limits_w() == FOUND


def test_backend_none_enforce_refuses_observe_records(fake_nvml, gpus, tmp_path: Path) -> None:
    with pytest.raises(RankError, match="power_cap=250 W requested but GPU 0 .* enforces 700 W; "
                                        "power.backend=none changes nothing; .*power.policy=observe"):
        with power_limits(PowerConfig(backend="none", policy="enforce"), 250.0, ENV, gpus, tmp_path):
            pass
    with power_limits(PowerConfig(backend="none", policy="observe"), 250.0, ENV, gpus, tmp_path) as limits:
        assert limits.gpus[A] == GpuLimit(A, 0, 250.0, 700.0, 700.0)
        assert "power.policy=observe: ran anyway" in limits.notes[0]
    with power_limits(PowerConfig(backend="none"), 700.0, ENV, gpus, tmp_path) as limits:  # already so: fine
        assert limits.notes == []
    assert fake_nvml.calls("nvmlDeviceSetPowerManagementLimit") == []


def test_no_cap_records_limits_as_found(fake_nvml, gpus, tmp_path: Path) -> None:
    with power_limits(PowerConfig(backend="nvml"), None, ENV, gpus, tmp_path) as limits:
        assert limits.gpus[C] == GpuLimit(C, 2, None, 700.0, 700.0)
    assert fake_nvml.calls("nvmlDeviceSetPowerManagementLimit") == []


def restore_cli(*paths: Path, node: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    if node is not None:
        env["SLURMD_NODENAME"] = node
    return subprocess.run([sys.executable, "-m", "energybench.power", "restore", *map(str, paths)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_restore_command_puts_back_a_killed_points_limits(shared, gpus, tmp_path: Path) -> None:
    path = state_path(tmp_path / "states", ENV.hostname)
    apply(PowerConfig(backend="nvml"), 200.0, gpus, path, ENV.hostname)  # as if the point died right here
    assert shared.limits_w()[C] == 200.0 and path.exists()
    proc = restore_cli(tmp_path / "states")  # a directory: this host's file in it
    assert proc.returncode == 0, proc.stderr
    assert shared.limits_w() == FOUND and not path.exists()
    again = restore_cli(path)  # what an exit trap does after a clean point: nothing to do
    assert again.returncode == 0 and "nothing to restore" in again.stdout
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"host": "elsewhere", "pid": 1, "created_at": "", "backend": "nvml",
                                 "command": None, "gpus": [{"uuid": A, "index": 0, "limit_w": 700}]}))
    refused = restore_cli(other)
    assert refused.returncode == 1 and "is for host elsewhere" in refused.stderr


def test_restore_in_a_directory_takes_this_slurm_nodes_file(shared, gpus, tmp_path: Path, monkeypatch) -> None:
    # two simulated Slurm nodes on one host (as the test cluster runs them): files keyed by Slurm's node name
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    path = state_path(tmp_path / "states", "n2")
    apply(PowerConfig(backend="nvml"), 200.0, gpus, path, "n2")
    monkeypatch.delenv("SLURMD_NODENAME")
    assert read_state(path).host == "n2"
    other_node = restore_cli(tmp_path / "states", node="n1")
    assert other_node.returncode == 0 and "nothing to restore" in other_node.stdout
    assert shared.limits_w()[C] == 200.0 and path.exists()
    proc = restore_cli(tmp_path / "states", node="n2")
    assert proc.returncode == 0, proc.stderr
    assert shared.limits_w() == FOUND and not path.exists()


def test_a_rerun_first_restores_what_a_killed_attempt_left_capped(fake_nvml, gpus, tmp_path: Path) -> None:
    path = state_path(tmp_path, ENV.hostname)
    apply(PowerConfig(backend="nvml"), 200.0, gpus[:2], path, ENV.hostname)  # attempt 1 capped A, B, then died
    assert fake_nvml.limits_w() == {A: 200.0, B: 200.0, C: 700.0}
    # attempt 2 (requeued onto this node, on GPUs B and C) must find 700 W, not the cap attempt 1 left
    with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus[1:], tmp_path) as limits:
        assert {u: g.found_limit_w for u, g in limits.gpus.items()} == {B: 700.0, C: 700.0}
        assert fake_nvml.limits_w() == {A: 700.0, B: 250.0, C: 250.0}
        assert {g.limit_w for g in read_state(path).gpus} == {700.0}
    assert fake_nvml.limits_w() == FOUND and not path.exists()


def test_a_state_file_of_a_running_process_is_left_alone(fake_nvml, gpus, tmp_path: Path) -> None:
    path = state_path(tmp_path, ENV.hostname)
    apply(PowerConfig(backend="nvml"), 200.0, gpus[:1], path, ENV.hostname)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {sleeper.pid}'))
        with pytest.raises(RankError, match=f"belongs to process {sleeper.pid}, still running on this node"):
            with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, tmp_path):
                pytest.fail("the point must not run")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert fake_nvml.limits_w()[A] == 200.0 and path.exists()  # the other point's limits and file untouched


def test_an_unwritable_state_dir_fails_on_every_rank_with_nothing_changed(fake_nvml, gpus, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    with pytest.raises(RankError, match=f"node {ENV.hostname}: .*not-a-dir"):  # agreed: no rank left waiting
        with power_limits(PowerConfig(backend="nvml"), 250.0, ENV, gpus, blocked):
            pytest.fail("the point must not run")
    assert fake_nvml.limits_w() == FOUND


@pytest.mark.parametrize("layout", ["single", "torchrun"])
def test_a_point_on_a_slurm_node_keys_its_state_file_as_the_restore_command_looks_for_it(
        layout: str, shared, gpus, tmp_path: Path, monkeypatch) -> None:
    # e.g. a local sweep (or torchrun) inside an sbatch job on a node whose Slurm name is not its hostname
    monkeypatch.setenv("SLURMD_NODENAME", "n7")
    env = DistEnv.single() if layout == "single" else DistEnv.from_environ({**os.environ, "RANK": "0",
                                                                             "WORLD_SIZE": "1"})
    assert env.hostname == "n7" and env.nodelist == ("n7",)
    states = tmp_path / "states"
    with power_limits(PowerConfig(backend="nvml"), 200.0, env, gpus, states):
        assert read_state(state_path(states, "n7")).host == "n7"
        proc = restore_cli(states, node="n7")  # what the sbatch templates' exit trap runs after a SIGKILL
        assert proc.returncode == 0 and "restored" in proc.stdout, proc.stdout + proc.stderr
        assert shared.limits_w() == FOUND
