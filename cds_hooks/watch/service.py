"""``crs-cds watch``: wire the watcher to its store, its HTTP client and the process's signals.

SIGTERM and SIGINT end the current cycle's wait and give up the lease, so a standby watcher can
take over at its next cycle instead of waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import httpx

from cds_hooks.pipeline.evaluate import Grading
from cds_hooks.stores.watch_store import WatchStore
from cds_hooks.watch.config import WatchConfig
from cds_hooks.watch.worker import CycleReport, Watcher


async def run_watch(
    config: WatchConfig, grading: Grading, *, once: bool, on_cycle: Callable[[CycleReport], None]
) -> CycleReport | None:
    """Watch until stopped (or one cycle); returns the last cycle's report."""
    store = WatchStore.open(config.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            watcher = Watcher(config, grading, store, client)
            last: list[CycleReport] = []

            def keep(report: CycleReport) -> None:
                last[:] = [report]
                on_cycle(report)

            await watcher.run(once=once, stop=stop, on_cycle=keep)
            return last[0] if last else None
    finally:
        store.close()
