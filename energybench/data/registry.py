"""Dataset specs by name: record fields, prompt template, reference field, splits, known files.

A dataset is registered once, as a `DatasetSpec`: the built-ins (alpaca, gsm8k, synthetic) in
energybench/data/builtin.py; a site's by `register_dataset` in a module named by $ENERGYBENCH_PLUGINS,
or by a spec file `<name>.yaml` in a folder of $ENERGYBENCH_DATASETS (or in `datasets/` of a folder of
$ENERGYBENCH_CONFIG_PATH, the site's presets). Registering a spec also makes
`dataset=<name>` composable (confload stores its DatasetConfig defaults in Hydra's ConfigStore). An unknown
name is an error; no dataset ever falls back to another's template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields as dc_fields
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import yaml

from energybench.data.catalog import KnownFile
from energybench.data.records import DataError
from energybench.plugins import PluginError, load_plugins

DATASETS_ENV = "ENERGYBENCH_DATASETS"  # folders (os.pathsep-separated) of <name>.yaml dataset specs
CONFIG_PATH_ENV = "ENERGYBENCH_CONFIG_PATH"  # a site's preset folders; their datasets/ subfolders hold specs too

Template = Union[str, Callable[[Mapping[str, Any]], str]]  # str.format over a record's fields, or a function


class UnknownDataset(DataError):
    """A dataset name no spec registered, or a spec that cannot be read; the message says what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the value of `dataset=` and of the results' dataset column
    fields: tuple[str, ...] = ()  # string fields every record must have
    reference: str | None = None  # field holding the reference answer (its token length drives length=oracle)
    template: Template | None = None  # default prompt; dataset.template overrides it
    splits: tuple[str, ...] = ()  # allowed dataset.split values (the first is the default); (): no splits
    files: tuple[str, ...] = ()  # names looked up under $ENERGYBENCH_DATA_DIR and the cache
    url: str | None = None  # canonical download URL (may use ${.split})
    known: tuple[KnownFile, ...] = ()  # canonical URLs with their sizes and checksums
    synthetic: bool = False  # random token ids with another dataset's lengths (dataset.like); no file
    lengths_like: tuple[str, ...] = field(default=())  # synthetic: datasets whose length histograms it can draw

    def prompt(self, record: Mapping[str, Any], template: str | None = None) -> str:
        """The prompt text of `record`: `template` (dataset.template) if given, else the spec's own."""
        from energybench.data.templates import render

        chosen = template if template is not None else self.template
        if chosen is None:
            raise UnknownDataset(f"dataset={self.name} has no prompt template; set dataset.template=<...>")
        return chosen(record) if callable(chosen) else render(chosen, dict(record))

    def config_defaults(self) -> dict[str, Any]:
        """The DatasetConfig values `dataset=<name>` composes to."""
        return {"name": self.name, "path": None, "url": self.url, "sha256": None, "files": list(self.files),
                "split": self.splits[0] if self.splits else None, "template": None, "like": None,
                "sort_by_length": False}


_SPECS: dict[str, DatasetSpec] = {}
_read_dirs: set[str] = set()


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make `dataset=<spec.name>` known; the same spec again is a no-op, another under a taken name an error."""
    taken = _SPECS.get(spec.name)
    if taken is not None and taken != spec:
        raise ValueError(f"dataset {spec.name!r} is already registered; pick another name")
    if not spec.name or "-" in spec.name or "/" in spec.name:
        raise ValueError(f"dataset name {spec.name!r}: use letters, digits and underscores (it goes into point ids)")
    if not spec.synthetic and (not spec.fields or spec.reference not in spec.fields):
        raise ValueError(f"dataset {spec.name}: reference={spec.reference!r} must be one of fields={spec.fields}")
    _SPECS[spec.name] = spec
    return spec


def dataset_names() -> tuple[str, ...]:
    """Every registered dataset, after importing plugin modules and reading $ENERGYBENCH_DATASETS."""
    _load_site()
    return tuple(_SPECS)


def get_dataset(name: str) -> DatasetSpec:
    """The spec of `name`; UnknownDataset (one line, the registered names) when nothing registered it."""
    names = dataset_names()
    if name not in _SPECS:
        raise UnknownDataset(f"dataset.name={name!r}: unknown dataset; must be one of {', '.join(names)} "
                             f"(a site dataset: <name>.yaml in a folder of ${DATASETS_ENV}, docs/extending.md)")
    return _SPECS[name]


def known_file(url: str) -> KnownFile | None:
    """The size and checksums some registered spec knows for `url`, or None."""
    for spec in _SPECS.values():
        for known in spec.known:
            if known.url == url:
                return known
    return None


def dataset_problem(cfg: Any, prefix: str = "dataset.") -> str | None:
    """What is wrong with DatasetConfig `cfg` for its spec (name, split, like, template), or None."""
    try:
        spec = get_dataset(cfg.name)
    except PluginError as e:
        return str(e)
    except UnknownDataset as e:
        return str(e).replace("dataset.name=", f"{prefix}name=", 1)
    if spec.synthetic and cfg.like not in spec.lengths_like:
        return f"{prefix}like={cfg.like!r}: must be one of {', '.join(spec.lengths_like)}"
    if spec.splits and cfg.split not in spec.splits:
        return f"{prefix}split={cfg.split!r}: must be one of {', '.join(spec.splits)}"
    if cfg.template is not None and spec.fields:
        return _template_problem(prefix + "template", cfg.template, spec)
    return None


def _template_problem(key: str, template: str, spec: DatasetSpec) -> str | None:
    try:
        template.format(**{f: "" for f in spec.fields})
        return None
    except KeyError as e:
        problem = f"{{{e.args[0]}}} is not a field of {spec.name} records"
    except (IndexError, ValueError, AttributeError) as e:
        problem = f"not a valid template ({e})"
    return (f"{key}={template!r}: {problem}; use placeholders "
            f"{', '.join('{' + f + '}' for f in spec.fields)} (and {{{{ }}}} for literal braces)")


def read_spec(path: Path) -> DatasetSpec:
    """The DatasetSpec of a `<name>.yaml` spec file (keys: DatasetSpec's fields; `known`: KnownFile mappings)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UnknownDataset(f"{path}: cannot read the dataset spec ({' '.join(str(e).split())})") from None
    allowed = {f.name for f in dc_fields(DatasetSpec)} - {"synthetic", "lengths_like"}
    if not isinstance(data, dict) or set(data) - allowed:
        extra = sorted(set(data) - allowed) if isinstance(data, dict) else ["(not a mapping)"]
        raise UnknownDataset(f"{path}: unknown key {extra[0]}; a dataset spec has {', '.join(sorted(allowed))}")
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise UnknownDataset(f"{path}: name={data['name']!r} differs from the file name; name the file {data['name']}.yaml")
    for key in ("fields", "splits", "files"):
        data[key] = tuple(str(v) for v in data.get(key) or ())
    data["known"] = tuple(KnownFile(**{"size_bytes": None, "sha256": None, "git_blob_sha1": None,
                                       "provenance": str(path), **k}) for k in data.get("known") or ())
    return DatasetSpec(**data)


def _load_site(environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    load_plugins(env)
    presets = [str(Path(f) / "datasets") for f in env.get(CONFIG_PATH_ENV, "").split(os.pathsep) if f]
    for folder in [*filter(None, env.get(DATASETS_ENV, "").split(os.pathsep)), *presets]:
        if folder in _read_dirs:
            continue
        _read_dirs.add(folder)
        if not Path(folder).is_dir():
            if folder in presets:
                continue  # a preset folder without datasets/
            raise UnknownDataset(f"{DATASETS_ENV}={env[DATASETS_ENV]}: {folder} is not a directory")
        for path in sorted(Path(folder).glob("*.yaml")):
            spec = read_spec(path)
            try:
                register_dataset(spec)
            except ValueError as e:
                raise UnknownDataset(f"{path}: {e}") from None


BUILTIN = ("alpaca", "gsm8k", "synthetic")  # their presets are conf/dataset/<name>.yaml


def site_config_nodes() -> dict[str, dict[str, Any]]:
    """{name: DatasetConfig defaults} of every registered site dataset: the Hydra layer (confload) stores
    them in Hydra's ConfigStore, so `dataset=<name>` composes without a conf/dataset/<name>.yaml."""
    return {n: _SPECS[n].config_defaults() for n in dataset_names() if n not in BUILTIN}


from energybench.data import builtin  # noqa: E402,F401  registers alpaca, gsm8k and synthetic
