"""How a power limit gets written: NVML (root), a site command (argument list, no shell), or not at all."""

from __future__ import annotations

import subprocess
from typing import Protocol

from energybench.device.nvml import Gpu, NvmlFault

COMMAND_TIMEOUT_S = 120.0


class LimitError(RuntimeError):
    """A power limit that cannot be checked, set or restored; the message names GPU, value and what to do."""


class Backend(Protocol):
    name: str

    def set_limit_w(self, gpu: Gpu, watts: float) -> None:
        """Set `gpu`'s power management limit to `watts`; LimitError on failure."""
        ...


def _watts(watts: float) -> str:
    return f"{watts:g}" if watts != int(watts) else str(int(watts))


class NvmlBackend:
    """nvmlDeviceSetPowerManagementLimit; needs root."""

    name = "nvml"

    def set_limit_w(self, gpu: Gpu, watts: float) -> None:
        try:
            gpu.set_limit_w(watts)
        except NvmlFault as e:
            if e.code == gpu.nvml.codes.no_permission:
                raise LimitError(
                    f"{gpu.label}: setting the power limit to {_watts(watts)} W needs root (NVML: no permission); "
                    "use power.backend=command with a site command (e.g. sudo nvidia-smi), or "
                    "power.backend=none power.policy=observe to record without capping") from None
            raise LimitError(f"{gpu.label}: setting the power limit to {_watts(watts)} W failed: {e}") from None


class CommandBackend:
    """A site command template run as an argument list (never through a shell), once per GPU.

    Placeholders: {index} (NVML index, as nvidia-smi -i takes it), {uuid}, {watts}.
    """

    name = "command"

    def __init__(self, template: tuple[str, ...]) -> None:
        if not template:
            raise LimitError("power.backend=command needs power.command, e.g. [sudo, nvidia-smi, -i, '{uuid}', "
                             "-pl, '{watts}']")
        try:
            [part.format(index=0, uuid="GPU-x", watts="1") for part in template]
        except (KeyError, IndexError, ValueError) as e:
            raise LimitError(f"power.command={list(template)}: bad placeholder {e}; "
                             "use {index}, {uuid} and {watts}") from None
        self.template = template

    def argv(self, gpu: Gpu, watts: float) -> list[str]:
        return [part.format(index=gpu.index, uuid=gpu.uuid, watts=_watts(watts)) for part in self.template]

    def set_limit_w(self, gpu: Gpu, watts: float) -> None:
        argv = self.argv(gpu, watts)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except FileNotFoundError:
            raise LimitError(f"{gpu.label}: power.command program {argv[0]!r} not found; "
                             "give its full path in power.command") from None
        except subprocess.TimeoutExpired:
            raise LimitError(f"{gpu.label}: power.command {argv} did not finish in {COMMAND_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise LimitError(f"{gpu.label}: power.command {argv} exited with code {proc.returncode}: {tail[0]}")


def make_backend(name: str, command: tuple[str, ...] | None) -> Backend | None:
    """The backend called `name`; None for `none` (limits are only read)."""
    if name == "nvml":
        return NvmlBackend()
    if name == "command":
        return CommandBackend(command or ())
    return None
