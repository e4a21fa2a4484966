"""Hydra search path of energybench: a site's config folders ($ENERGYBENCH_CONFIG_PATH) after the package's conf/.

Hydra finds this plugin in the hydra_plugins namespace and applies it to every composition, the
`@hydra.main` app (energybench.sweep) and the compose API (energybench.confload.compose) alike, so
`cluster=mysite` or `model=mymodel` resolve from a site's own folder without touching the package.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class EnergybenchSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from energybench.confload import site_config_dirs

        # appended: the package's presets (and the ids of their points) cannot be shadowed by a site file
        for folder in site_config_dirs():
            search_path.append(provider="energybench-site", path=f"file://{folder}")
