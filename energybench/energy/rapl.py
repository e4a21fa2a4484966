"""Former home of RAPL reading, now energybench.device.rapl; these names stay importable from here."""

from energybench.device.rapl import DEFAULT_ROOT, ROOT_ENV, Rapl, RaplUnavailable  # noqa: F401
