"""Progress of a point: a bar on a terminal, plain log lines otherwise; silent on ranks other than 0."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("energybench")


def setup_logging(rank: int) -> None:
    """Rank 0 logs INFO, other ranks only warnings, each line tagged with its rank."""
    logger = logging.getLogger("energybench")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[%(asctime)s rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


class Progress:
    """Counts batches of one point; shows tokens/s so far."""

    def __init__(self, total: int, label: str, enabled: bool, every_s: float = 10.0) -> None:
        self.total, self.label, self.enabled, self.every_s = total, label, enabled, every_s
        self.done = 0
        self.tokens = 0
        self.elapsed_s = 0.0
        self._last_log = time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, tokens: int, duration_s: float) -> None:
        if not self.enabled:
            return
        self.done += 1
        self.tokens += tokens
        self.elapsed_s += duration_s
        rate = self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0
        if self._bar is not None:
            self._bar.set_postfix_str(f"{rate:,.1f} tok/s", refresh=False)
            self._bar.update(1)
        elif self.done == self.total or time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            log.info("%s: batch %d/%d, %.1f tokens/s", self.label, self.done, self.total, rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
