"""From Hydra's composed config to a validated PointConfig; where the config tree lives; compose API."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from energybench.config import ConfigError, PointConfig, from_mapping, to_mapping

GROUPS = ("model", "dataset", "cluster", "experiment", "shape")
CONFIG_PATH_ENV = "ENERGYBENCH_CONFIG_PATH"  # a site's own config folders (cluster/, model/, ...), colon-separated


def conf_dir() -> Path:
    """The config tree: packaged beside the code when installed, else the checkout's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"energybench config tree not found next to {here}; reinstall the package")


def site_config_dirs(environ: typing.Mapping[str, str] | None = None, check: bool = False) -> list[Path]:
    """The folders of $ENERGYBENCH_CONFIG_PATH (colon-separated), searched after the package's conf/ for
    group options (cluster/<site>.yaml, model/<name>.yaml, ...): a site's presets live outside the package.
    `check` raises ConfigError for an entry that is not a folder (else it is left out)."""
    env = os.environ if environ is None else environ
    dirs = []
    for entry in env.get(CONFIG_PATH_ENV, "").split(":"):
        if not entry:
            continue
        folder = Path(entry).expanduser().absolute()
        if folder.is_dir():
            dirs.append(folder)
        elif check:
            raise ConfigError(f"{CONFIG_PATH_ENV}: {entry} is not a folder; set it to folders holding cluster/, "
                              "model/, ... (colon-separated), or unset it")
    return dirs


SCHEMA = "energybench_schema"  # the ConfigStore entry conf/config.yaml lists first in its defaults
_FROM_GROUPS = ("model", "dataset")  # PointConfig fields without a default: a config group supplies them


def schema_defaults() -> dict[str, Any]:
    """Every default of config.PointConfig (and its nested dataclasses) as a plain mapping: the defaults are
    declared once, in the dataclasses; conf/config.yaml and the groups hold only values that differ."""
    out = _defaults_of(PointConfig)
    hints = typing.get_type_hints(PointConfig)
    for group in _FROM_GROUPS:  # the defaulted keys of ModelConfig, DatasetConfig: a group file gives the rest
        out[group] = _defaults_of(hints[group])
    return out


def _defaults_of(cls: Any) -> dict[str, Any]:
    """{field: default} of dataclass `cls`, nested dataclasses as mappings; fields without a default left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            continue
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        out[f.name] = to_mapping(value) if dataclasses.is_dataclass(value) else (
            list(value) if isinstance(value, tuple) else value)
    return out


def register_schema() -> None:
    """Put the dataclass defaults in Hydra's ConfigStore as `energybench_schema`. The node is stored untyped:
    the types stay with config.from_mapping, whose one-line ConfigError names the key, the value and the fix
    (a typed node would make OmegaConf reject bad values first, with Hydra's multi-line messages)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA, node=schema_defaults())


def to_point_config(cfg: DictConfig) -> PointConfig:
    """Resolve the composed config (without its `hydra` node) and validate it into a PointConfig."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None
    return from_mapping(PointConfig, data)  # type: ignore[arg-type]


def compose(overrides: Sequence[str] = ()) -> PointConfig:
    """The PointConfig that `python -m energybench.sweep <overrides>` would run (one point, no sweep)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hydra.errors import HydraException

    check_group_choices(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            composed = hydra_compose("config", overrides=list(overrides))
        except HydraException as e:  # override grammar, composition: Hydra's message, on one line
            raise ConfigError(f"{' '.join(overrides)}: {' '.join(str(e).split())}") from None
        return to_point_config(composed)


def group_options(group: str) -> list[str]:
    """The choices of a config group: the package's conf/<group>/*.yaml and each site folder's; for `dataset`,
    also the site datasets registered as specs (energybench.data.registry), stored in Hydra's ConfigStore."""
    options = {p.stem for d in (conf_dir(), *site_config_dirs()) for p in (d / group).glob("*.yaml")}
    if group == "dataset":
        from hydra.core.config_store import ConfigStore

        from energybench.data.registry import site_config_nodes

        try:
            nodes = site_config_nodes()
        except ValueError as e:  # a bad spec file or plugin module: one line naming it
            raise ConfigError(str(e)) from None
        for name, node in nodes.items():
            ConfigStore.instance().store(group="dataset", name=name, node=node)
            options.add(name)
    return sorted(options)


def _check_key(key: str) -> None:
    """`key` (dotted) names a field of PointConfig, a config group, or Hydra's own settings."""
    parts = key.split("@")[0].split(".")
    if parts[0] in ("hydra", "experiment") or (len(parts) == 1 and parts[0] in GROUPS):
        return
    cls: Any = PointConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return  # inside a free-form mapping (cluster.additional_parameters)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            prefix = ".".join(parts[:depth])
            known = ", ".join(f"{prefix}.{n}" if prefix else n for n in fields)
            raise ConfigError(f"unknown key {key}; known keys: {known}")
        cls = typing.get_type_hints(cls)[part]


def check_group_choices(overrides: Sequence[str]) -> None:
    """One-line errors for unknown keys (foo=1) and config-group choices (model=70b), before Hydra
    composes anything (Hydra's own messages for these run over several lines)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    site_config_dirs(check=True)
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    except Exception as e:  # Hydra's own grammar errors are clear enough; let Hydra report them
        del e
        return
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        if not (override.is_add() or override.is_force_add()):  # `+key=value` is validated after composition
            _check_key(group)
        if group not in GROUPS or override.is_delete():
            continue
        options = group_options(group)
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        for value in values:
            if value not in options and not (group == "experiment" and value == "null"):
                raise ConfigError(f"{group}={value}: unknown {group}; choose one of {', '.join(options)}")


register_schema()  # at import: the sweep app, the compose API and Slurm jobs all import this module first
