"""Typed configuration of one grid point: the plain dataclasses every layer below the sweep receives.

The Hydra config tree (`conf/`) supplies the values; `from_mapping` turns the composed mapping into
these frozen dataclasses once, at the entry point, and every user error is a `ConfigError` whose
one-line message names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from energybench.engine.registry import engine_names, online_engine_names

WORKLOADS = ("offline", "online")
LENGTH_MODES = ("sampled", "oracle")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEVICES = ("auto", "cpu", "cuda")
WEIGHT_SOURCES = ("random", "meta", "hf")
GPU_METERS = ("auto", "nvml", "none")
CPU_METERS = ("auto", "rapl", "none")
POWER_BACKENDS = ("nvml", "command", "none")
POWER_POLICIES = ("enforce", "observe")
LAUNCHERS = ("local", "slurm")
SLURM_ONLY = ("partition", "account", "qos", "constraint", "time_min", "mem_gb", "cpus_per_task", "max_requeues",
              "setup", "additional_parameters")  # ClusterConfig keys a local launcher has no use for


class ConfigError(ValueError):
    """A configuration a user wrote that cannot run; the message names the key, the value and the fix."""


class ShardsError(ConfigError):
    """`shards` does not split the model's heads: in a sweep the point is skipped, alone it is an error."""


@dataclass(frozen=True)
class ModelConfig:
    name: str  # preset name recorded in results, e.g. "7b"
    dim: int  # hidden size (LLaMA-7B: 4096)
    n_layers: int  # transformer blocks
    n_heads: int  # attention heads; `shards` must divide it
    vocab_size: int = 32000  # LLaMA's SentencePiece vocabulary
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim: int | None = None  # explicit SwiGLU hidden size; None applies LLaMA's 2/3 * 4 * dim rule
    norm_eps: float = 1e-6  # RMSNorm epsilon
    rope_theta: float = 10000.0  # rotary embedding base
    max_seq_len: int = 2048  # longest prompt + generation the KV cache holds
    weights: str = "random"  # random | meta (params.json + consolidated.NN.pth) | hf (safetensors)
    path: str | None = None  # checkpoint directory for meta/hf weights
    tokenizer: str | None = None  # SentencePiece tokenizer.model; None: token ids only (synthetic data)

    @property
    def hidden_dim(self) -> int:
        """SwiGLU hidden size: LLaMA's rule, 7b -> 11008, 13b -> 13824, 65b -> 22016."""
        if self.ffn_dim is not None:
            return self.ffn_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def valid_shards(self) -> list[int]:
        """Shard counts that split heads, hidden and FFN sizes evenly."""
        return [
            s
            for s in range(1, self.n_heads + 1)
            if self.n_heads % s == 0 and self.dim % s == 0 and self.hidden_dim % s == 0
        ]


@dataclass(frozen=True)
class DatasetConfig:
    name: str  # a registered dataset (energybench.data.registry): alpaca | gsm8k | synthetic | a site's
    path: str | None = None  # local file; else $ENERGYBENCH_DATA_DIR, the user cache, then `url`
    url: str | None = None  # canonical public download URL
    sha256: str | None = None  # expected sha256 of the download; None: the known checksums of a canonical URL
    files: tuple[str, ...] = ()  # names looked up under $ENERGYBENCH_DATA_DIR and the cache; the first is the download's
    split: str | None = None  # gsm8k: train | test
    template: str | None = None  # prompt template; None: the dataset's own default
    like: str | None = None  # synthetic only: alpaca | gsm8k, whose length histograms to draw from
    sort_by_length: bool = False  # sort the drawn prompts by length before batching


@dataclass(frozen=True)
class MeterConfig:
    gpu: str = "auto"  # auto (NVML when present) | nvml (required) | none
    cpu: str = "auto"  # auto (RAPL when readable) | rapl (required) | none
    sample_hz: float = 10.0  # per-node sampler rate; 0 turns the timeline off (totals still come from counters)
    idle_s: float = 5.0  # idle baseline measured before warm-up; 0 skips it
    flush_s: float = 5.0  # how often the sampler writes a Parquet part


@dataclass(frozen=True)
class PowerConfig:
    backend: str = "nvml"  # nvml (needs root) | command (site template) | none (record only)
    policy: str = "enforce"  # enforce: a cap that cannot be applied fails the point | observe: record and run
    command: tuple[str, ...] | None = None  # argv template with {index} {uuid} {watts}, run without a shell
    state_dir: str | None = None  # where the restore-state file goes; None: the point directory


@dataclass(frozen=True)
class ClusterConfig:
    name: str = "local"  # preset name, recorded in results
    launcher: str = "local"  # local: this machine | slurm: one Slurm job per point via submitit
    gpus_per_node: int | None = None  # GPUs a node offers; None: whatever this machine has
    gpu_type: str | None = None  # e.g. "A100-80GB"; used by pre-flight memory checks
    gpu_memory_gb: float | None = None  # memory per GPU for pre-flight; None: look up gpu_type
    partition: str | None = None  # sbatch --partition
    account: str | None = None  # sbatch --account
    qos: str | None = None  # sbatch --qos
    constraint: str | None = None  # sbatch --constraint
    time_min: int = 60  # sbatch --time, minutes
    mem_gb: int | None = None  # memory per node, GB
    cpus_per_task: int | None = None  # CPUs per rank
    max_requeues: int = 3  # requeues after preemption or time limit
    setup: tuple[str, ...] = ()  # shell lines run in the job before srun (module load ...)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # extra sbatch options


@dataclass(frozen=True)
class CarbonConfig:
    intensity_g_per_kwh: float | None = None  # grid carbon intensity, gCO2e per kWh; None: unknown, no CO2 columns
    pue: float = 1.0  # data-centre power usage effectiveness (facility / IT energy); 1.0 counts the IT energy only


@dataclass(frozen=True)
class CostConfig:
    usd_per_kwh: float | None = None  # electricity price, USD per kWh; None: unknown, no cost columns


@dataclass(frozen=True)
class OnlineConfig:
    """workload=online: requests arriving over time into a continuously refilled batch (docs/methodology.md)."""

    rate: float | None = None  # mean arrival rate, requests/s; required for workload=online
    burstiness: float = 1.0  # 1: Poisson arrivals; else gamma inter-arrival gaps of this shape (< 1 burstier)
    requests: int | None = None  # requests sent; None: every arrival within duration_s
    duration_s: float | None = 30.0  # arrivals over this many seconds when requests is None
    seed: int | None = None  # seeds the arrival times; None: the point's seed
    slo_ttft_s: float = 1.0  # goodput: a request meets the SLO with TTFT <= this ...
    slo_tpot_s: float = 0.1  # ... and time per output token <= this
    prefill_tokens: int = 512  # prompt tokens prefilled per step at most; longer prompts go in chunks
    counter_read_s: float = 0.5  # energy counters read at step edges at most this often (per-request energy)


@dataclass(frozen=True)
class PointConfig:
    model: ModelConfig  # LLaMA shape and weights
    dataset: DatasetConfig  # workload
    batch: int = 64  # prompts per generate call
    max_tokens: int = 128  # new tokens per response, at most
    shards: int = 1  # model-parallel processes, one GPU each
    power_cap: float | None = None  # watts per GPU; None leaves limits as found
    samples: int = 4096  # prompts drawn from the dataset
    temperature: float = 0.8  # sampling temperature; 0 is greedy
    top_p: float = 0.95  # nucleus sampling mass
    seed: int = 1  # seeds data draw, random weights and sampling
    engine: str = "reference"  # reference (Meta's v1 loop) | fast | fast_tuned (docs/engine.md)
    length: str = "sampled"  # sampled: stop at EOS | oracle: stop at the reference answer's length
    dtype: str = "auto"  # auto (float16 on GPU, float32 on CPU) | float16 | bfloat16 | float32
    device: str = "auto"  # auto | cpu | cuda
    warmup_batches: int = 1  # batches run before measuring, excluded from the metrics
    out_dir: str = "results"  # root of all results
    sweep: str = "default"  # sweep name: results go to <out_dir>/<sweep>/point=<id>/
    resume: bool = True  # skip points already done in <out_dir>/<sweep>
    meter: MeterConfig = field(default_factory=MeterConfig)  # energy measurement
    power: PowerConfig = field(default_factory=PowerConfig)  # power capping
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # where points run
    carbon: CarbonConfig = field(default_factory=CarbonConfig)  # CO2 from energy (analysis only; not in the id)
    cost: CostConfig = field(default_factory=CostConfig)  # money from energy (analysis only; not in the id)
    workload: str = "offline"  # offline: fixed batches of `samples` prompts | online: requests over time
    online: OnlineConfig = field(default_factory=OnlineConfig)  # workload=online only (out of offline ids)
    compile_cache: str = "auto"  # torch.compile's cache: auto (<user cache>/energybench/compile) | off | a folder


T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, converting and checking every field; raises ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}={data!r}: expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; known keys: {', '.join(prefix + n for n in names)}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {prefix}{f.name}")
    obj = cls(**values)
    check = globals().get(f"_check_{cls.__name__}")
    if check is not None:
        check(obj, prefix)
    return obj


def to_mapping(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists), for YAML and hashing."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(hint):
                return None
        return _convert(options[0], value, key)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value if value is not None else {}, key + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `model.name=7` composes as an int
        raise ConfigError(f"{key}={value!r}: expected a string")
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_convert(str, v, f"{key}[{i}]") for i, v in enumerate(value))
        raise ConfigError(f"{key}={value!r}: expected a list of strings")
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f"{key}={value!r}: expected a mapping")
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _choice(key: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(allowed)}")


def _positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{key}={value!r}: must be {bound}")


def _check_ModelConfig(m: ModelConfig, prefix: str) -> None:
    for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
        _positive(prefix + name, getattr(m, name))
    if m.dim % m.n_heads:
        raise ConfigError(f"{prefix}dim={m.dim} is not divisible by {prefix}n_heads={m.n_heads}")
    if m.head_dim % 2:
        raise ConfigError(f"{prefix}dim/{prefix}n_heads={m.head_dim}: rotary embeddings need an even head size")
    _choice(prefix + "weights", m.weights, WEIGHT_SOURCES)
    if m.weights != "random" and not m.path:
        raise ConfigError(
            f"{prefix}weights={m.weights} needs {prefix}path=<checkpoint directory>; or use {prefix}weights=random"
        )


def _check_DatasetConfig(d: DatasetConfig, prefix: str) -> None:
    from energybench.data.registry import dataset_problem  # the registered specs say what is valid

    if (problem := dataset_problem(d, prefix)) is not None:
        raise ConfigError(problem)


def _check_MeterConfig(m: MeterConfig, prefix: str) -> None:
    _choice(prefix + "gpu", m.gpu, GPU_METERS)
    _choice(prefix + "cpu", m.cpu, CPU_METERS)
    _positive(prefix + "sample_hz", m.sample_hz, zero_ok=True)
    _positive(prefix + "idle_s", m.idle_s, zero_ok=True)
    _positive(prefix + "flush_s", m.flush_s)


def _check_PowerConfig(p: PowerConfig, prefix: str) -> None:
    _choice(prefix + "backend", p.backend, POWER_BACKENDS)
    _choice(prefix + "policy", p.policy, POWER_POLICIES)
    if p.backend == "command" and not p.command:
        raise ConfigError(
            f"{prefix}backend=command needs {prefix}command, an argument list such as "
            "[sudo, nvidia-smi, -i, '{index}', -pl, '{watts}']"
        )


def _check_ClusterConfig(c: ClusterConfig, prefix: str) -> None:
    _choice(prefix + "launcher", c.launcher, LAUNCHERS)
    if c.launcher == "local":
        for name in SLURM_ONLY:
            if getattr(c, name) != getattr(ClusterConfig(), name):
                raise ConfigError(f"{prefix}{name}={getattr(c, name)!r}: only Slurm presets use it; "
                                  f"cluster={c.name} runs points on this machine (use cluster=slurm or a site preset)")
    if c.launcher == "slurm" and c.gpus_per_node is None:
        raise ConfigError(f"{prefix}launcher=slurm needs {prefix}gpus_per_node, the GPUs of one node "
                          f"(e.g. {prefix}gpus_per_node=4); jobs are sized from it")
    if c.gpus_per_node is not None:
        _positive(prefix + "gpus_per_node", c.gpus_per_node)
    _positive(prefix + "time_min", c.time_min)
    _positive(prefix + "max_requeues", c.max_requeues, zero_ok=True)


def _check_CarbonConfig(c: CarbonConfig, prefix: str) -> None:
    if c.intensity_g_per_kwh is not None:
        _positive(prefix + "intensity_g_per_kwh", c.intensity_g_per_kwh, zero_ok=True)
    if c.pue < 1.0:
        raise ConfigError(f"{prefix}pue={c.pue!r}: must be >= 1 (facility energy over IT energy; 1.0 for none)")


def _check_CostConfig(c: CostConfig, prefix: str) -> None:
    if c.usd_per_kwh is not None:
        _positive(prefix + "usd_per_kwh", c.usd_per_kwh, zero_ok=True)


def _check_OnlineConfig(o: OnlineConfig, prefix: str) -> None:
    if o.rate is not None:
        _positive(prefix + "rate", o.rate)
    _positive(prefix + "burstiness", o.burstiness)
    if o.requests is not None:
        _positive(prefix + "requests", o.requests)
    if o.duration_s is not None:
        _positive(prefix + "duration_s", o.duration_s)
    for name in ("slo_ttft_s", "slo_tpot_s", "prefill_tokens", "counter_read_s"):
        _positive(prefix + name, getattr(o, name))


def _check_online(p: PointConfig) -> None:
    _choice("workload", p.workload, WORKLOADS)
    if p.workload != "online":
        return
    if p.engine not in online_engine_names():
        loop = "Meta's static loop" if p.engine == "reference" else "it"
        raise ConfigError(f"engine={p.engine} cannot run workload=online: {loop} runs a batch to its end and cannot "
                          f"admit a request mid-batch; use engine={'|'.join(online_engine_names())} (continuous batching)")
    if p.online.rate is None:
        raise ConfigError("workload=online needs online.rate=<requests per second>, e.g. online.rate=4")
    if p.online.requests is None and p.online.duration_s is None:
        raise ConfigError("workload=online needs online.requests=<n> or online.duration_s=<seconds of arrivals>")


def _check_PointConfig(p: PointConfig, prefix: str) -> None:
    for name in ("batch", "max_tokens", "shards", "samples"):
        _positive(name, getattr(p, name))
    # offline: one short batch would be recorded under a batch size it never ran at (online points draw a
    # prompt per request and do not use samples)
    if p.workload == "offline" and p.batch > p.samples:
        raise ConfigError(f"batch={p.batch} is larger than samples={p.samples}: a batch cannot hold more prompts "
                          f"than the point draws; use batch <= {p.samples} or samples >= {p.batch}")
    _positive("warmup_batches", p.warmup_batches, zero_ok=True)
    _positive("temperature", p.temperature, zero_ok=True)
    if not 0.0 < p.top_p <= 1.0:
        raise ConfigError(f"top_p={p.top_p!r}: must be in (0, 1]")
    if p.power_cap is not None:
        _positive("power_cap", p.power_cap)
    try:
        _choice("engine", p.engine, engine_names())
    except ValueError as e:  # a site plugin module that cannot be imported (energybench.plugins)
        raise ConfigError(str(e)) from None
    _choice("length", p.length, LENGTH_MODES)
    _choice("dtype", p.dtype, DTYPES)
    _choice("device", p.device, DEVICES)
    cache = p.compile_cache.strip()
    if cache.lower() not in ("auto", "off") and not os.path.isabs(os.path.expanduser(cache)):
        raise ConfigError(f"compile_cache={p.compile_cache!r}: use auto (the user's cache), off (nothing kept past "
                          "the process) or an absolute folder (jobs start in other directories), e.g. "
                          "compile_cache=/shared/energybench-compile")
    if p.max_tokens >= p.model.max_seq_len:
        raise ConfigError(
            f"max_tokens={p.max_tokens} leaves no room for a prompt in model.max_seq_len={p.model.max_seq_len}; "
            f"use max_tokens < {p.model.max_seq_len}"
        )
    if p.dataset.name != "synthetic" and not p.model.tokenizer:
        raise ConfigError(
            f"dataset={p.dataset.name} needs model.tokenizer=<path to LLaMA's tokenizer.model> "
            "(or $ENERGYBENCH_TOKENIZER); dataset=synthetic needs none"
        )
    valid = p.model.valid_shards()
    if p.shards not in valid:
        raise ShardsError(
            f"shards={p.shards} does not divide n_heads={p.model.n_heads} of model {p.model.name}; "
            f"use {', '.join(map(str, valid))}"
        )
    if not p.sweep or "/" in p.sweep or p.sweep.startswith("."):
        raise ConfigError(f"sweep={p.sweep!r}: must be a plain directory name")
    _check_online(p)
