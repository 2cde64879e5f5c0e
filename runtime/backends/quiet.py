"""Notices the backends' Python stacks print that no user can act on, filtered at their source.

- torch logs (through `logging`, not `warnings`) that torchao's `KernelPreference`
  enum no longer needs registering, whenever executorch's bindings or its
  exporter first import torchao;
- ExecuTorch logs, through Python's sys.stderr, how it probed /sys for CPU
  details, once per process, when its thread pool first starts, and that it
  resized its thread pool when a device's thread count is applied;
- ExecuTorch's ETDump Inspector warns that no debug buffer was given, which
  only a caller asking for intermediate tensors needs (we read kernel times);
- coremltools logs, when it is imported, that the pinned scikit-learn and
  torch are newer than those it was tested with, and, off macOS, that each of
  its native proxies failed to load (predicting needs macOS; converting does not).

Each filter is on only around the call that prints, and drops only those
lines; every other warning and log line still shows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

__all__ = ["without_kernel_preference_notice", "without_cpuinfo_lines", "without_debug_buffer_notice",
           "without_coremltools_import_notices",
           "THREAD_POOL_NOTICES", "COREMLTOOLS_IMPORT_NOTICES"]

THREAD_POOL_NOTICES = ("[cpuinfo_utils.cpp:", "[threadpool.cpp:")  # the lines its thread pool prints
COREMLTOOLS_IMPORT_NOTICES = ("Failed to load _ML", "scikit-learn version ", "Torch version ")


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


@contextlib.contextmanager
def without_debug_buffer_notice() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Output Buffer not found", category=UserWarning)
        yield


class _CoremltoolsImportNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(COREMLTOOLS_IMPORT_NOTICES)


@contextlib.contextmanager
def without_coremltools_import_notices() -> Iterator[None]:
    """Around `import coremltools`: its loggers are created on import, so the filter sits on the handlers of the
    root logger (where the records end), and on the last-resort handler, used while the root has none."""
    notice = _CoremltoolsImportNotice()
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        handler.addFilter(notice)
    try:
        with without_kernel_preference_notice():
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(notice)
