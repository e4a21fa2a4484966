"""Packaging that pyproject.toml cannot express: the top-level conf/ tree installs as energybench/conf,
so Hydra finds the same config tree in a checkout, an editable install and a regular install."""

from setuptools import find_namespace_packages, setup

conf = ["energybench.conf", *(f"energybench.conf.{p}" for p in find_namespace_packages(where="conf"))]
setup(
    packages=[*find_namespace_packages(include=["energybench", "energybench.*", "hydra_plugins.*"]), *conf],
    package_dir={"energybench.conf": "conf"},
    package_data={"": ["*.yaml", "*.json"]},
)
