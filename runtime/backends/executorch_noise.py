"""Two notices ExecuTorch's Python stack prints that no user can act on, filtered at their source.

- torch logs (through `logging`, not `warnings`) that torchao's `KernelPreference`
  enum no longer needs registering, whenever executorch's bindings or its
  exporter first import torchao;
- ExecuTorch logs, through Python's sys.stderr, how it probed /sys for CPU
  details, once per process, when its thread pool first starts, and that it
  resized its thread pool when a device's thread count is applied.

Each filter is on only around the call that prints, and drops only those
lines; every other warning and log line still shows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["without_kernel_preference_notice", "without_cpuinfo_lines", "THREAD_POOL_NOTICES"]

THREAD_POOL_NOTICES = ("[cpuinfo_utils.cpp:", "[threadpool.cpp:")  # the lines its thread pool prints


class _KernelPreferenceNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        notice = str(record.msg).startswith("%s is an Enum subclass")
        return not (notice and args and getattr(args[0], "__name__", "") == "KernelPreference")


@contextlib.contextmanager
def without_kernel_preference_notice() -> Iterator[None]:
    log, notice = logging.getLogger("torch.utils._pytree"), _KernelPreferenceNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


class _DropLines:
    """A stand-in for sys.stderr that drops whole lines starting with one of `prefixes` and forwards the rest."""

    def __init__(self, stream, prefixes: tuple[str, ...]) -> None:
        self.stream, self.prefixes, self.pending = stream, prefixes, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not line.startswith(self.prefixes):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:  # ExecuTorch flushes after every fragment of a line: keep the fragment
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def without_cpuinfo_lines() -> Iterator[None]:
    stream = sys.stderr
    sys.stderr = _DropLines(stream, THREAD_POOL_NOTICES)
    try:
        yield
    finally:
        pending, sys.stderr = sys.stderr.pending, stream
        if pending and not pending.startswith(THREAD_POOL_NOTICES):
            stream.write(pending)
