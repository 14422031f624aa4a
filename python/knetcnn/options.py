"""Execution options of the cuDNN backend, and its algorithm cache.

``knetcnn.options(...)`` works two ways:

* as a call, it changes the process-wide defaults::

      knetcnn.options(algo="benchmark", workspace_limit=512 * 2**20)

* as a context manager, it changes them for the current thread only, until the block ends::

      with knetcnn.options(algo="deterministic"):
          y = knetcnn.conv4(w, x)

  (The call first sets the defaults; entering the block puts them back and applies the same
  values to this thread instead. Blocks nest, and other threads keep the defaults. The override
  is per OS thread: asyncio tasks on one thread share it.)

Options (anything not given keeps its value):

``algo``
    How a convolution algorithm is chosen. ``"heuristic"`` (default): cuDNN's ranking
    (``cudnnGet*Algorithm_v7``), the first that succeeds and fits the workspace limit.
    ``"benchmark"``: time the algorithms once per configuration (``cudnnFind*AlgorithmEx``) and
    keep the fastest; refused while the stream captures a CUDA graph unless the choice is already
    cached. ``"deterministic"``: only algorithms cuDNN marks deterministic, and max pooling with
    a deterministic backward, so repeated runs give bit-identical results.
``workspace_limit``
    Largest cuDNN workspace in bytes (an int >= 0), or ``None`` for the default
    ``min(256 MiB, free memory / 8)``, measured once per device.
``allow_tf32``
    Let float32 convolutions use TF32 tensor cores (faster on Ampere and later, ~10 mantissa
    bits). Default ``False``: float32 results stay close to the CPU backend's.

Every choice is cached under a key covering the whole problem (device, direction, dtypes, all
shapes and strides, keywords, and these options); ``cache_info()`` reports the counters,
``clear_cache()`` forgets the choices and frees the workspaces, ``save_cache``/``load_cache``
keep benchmark results across processes (tied to the cuDNN version and the devices' names).
"""

from __future__ import annotations

import operator
import os
import threading
from typing import Any

import numpy as np

from ._core import core

ALGORITHMS = ("heuristic", "benchmark", "deterministic")
_UNSET: Any = object()
_lock = threading.Lock()  # makes "read the defaults, write the defaults" atomic among callers


def _validate(algo, workspace_limit, allow_tf32) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if algo is not _UNSET:
        if not isinstance(algo, str):
            raise TypeError(f"knetcnn.options: algo={algo!r}: algo must be a str, one of {ALGORITHMS}, "
                            f"not {type(algo).__name__}")
        if algo not in ALGORITHMS:
            raise ValueError(f"knetcnn.options: algo={algo!r}: algo must be one of {ALGORITHMS}")
        fields["algo"] = algo
    if workspace_limit is not _UNSET:
        if workspace_limit is not None:
            if isinstance(workspace_limit, bool) or not hasattr(type(workspace_limit), "__index__"):
                raise TypeError(f"knetcnn.options: workspace_limit={workspace_limit!r}: workspace_limit must be "
                                f"an int (bytes) or None, not {type(workspace_limit).__name__}")
            workspace_limit = operator.index(workspace_limit)
            if not 0 <= workspace_limit < 2**63:
                raise ValueError(f"knetcnn.options: workspace_limit={workspace_limit!r}: workspace_limit must be "
                                 "a number of bytes >= 0, or None for the default")
        fields["workspace_limit"] = workspace_limit
    if allow_tf32 is not _UNSET:
        if not isinstance(allow_tf32, (bool, np.bool_)):
            raise TypeError(f"knetcnn.options: allow_tf32={allow_tf32!r}: allow_tf32 must be True or False, "
                            f"not {type(allow_tf32).__name__}")
        fields["allow_tf32"] = bool(allow_tf32)
    return fields


def _set_defaults(values: dict[str, Any]) -> None:
    core.set_default_options(values["algo"], values["workspace_limit"], values["allow_tf32"])


class options:
    """Set execution options globally (a call) or for this thread within a ``with`` block.

    ``options()`` with no arguments changes nothing; its attributes ``algo``, ``workspace_limit``
    and ``allow_tf32`` read the options in effect on this thread. See the module docstring.
    """

    def __init__(self, algo: str = _UNSET, workspace_limit: int | None = _UNSET, allow_tf32: bool = _UNSET):
        self._fields = _validate(algo, workspace_limit, allow_tf32)
        self._previous_thread: dict[str, Any] | None = None
        with _lock:
            self._previous_defaults = core.get_default_options()
            if self._fields:
                _set_defaults({**self._previous_defaults, **self._fields})

    def __enter__(self) -> "options":
        if self._previous_thread is not None:
            raise RuntimeError("knetcnn.options: this object is already in use as a context manager")
        with _lock:
            # Undo the global change the call made, field by field, unless another call has changed
            # that field since.
            current = core.get_default_options()
            restored = dict(current)
            for name, value in self._fields.items():
                if current[name] == value:
                    restored[name] = self._previous_defaults[name]
            _set_defaults(restored)
        self._previous_thread = core.get_thread_options()
        core.set_thread_options({**self._previous_thread, **self._fields})
        return self

    def __exit__(self, *exc_info) -> None:
        core.set_thread_options(self._previous_thread or {})
        self._previous_thread = None

    @property
    def algo(self) -> str:
        return core.effective_options()["algo"]

    @property
    def workspace_limit(self) -> int | None:
        return core.effective_options()["workspace_limit"]

    @property
    def allow_tf32(self) -> bool:
        return core.effective_options()["allow_tf32"]

    def __repr__(self) -> str:
        e = core.effective_options()
        return f"knetcnn.options(algo={e['algo']!r}, workspace_limit={e['workspace_limit']!r}, allow_tf32={e['allow_tf32']!r})"


def cache_info() -> dict[str, int]:
    """The algorithm cache's counters: hits, misses, evictions, size, capacity; plus the workspace
    memory held (``workspace_buffers``: knetcnn's memory pools holding memory and, on devices
    without pools, cached per-stream buffers; ``workspace_bytes``: their bytes) and the cuDNN
    handles created."""
    return dict(core.algo_cache_info())


def clear_cache() -> None:
    """Forget every algorithm choice, reset the counters, and release the cuDNN workspace memory
    knetcnn holds (waits for the devices that held some). CUDA graphs captured earlier own the
    workspaces they use (graph memory nodes), so they stay valid."""
    core.algo_cache_clear()


def save_cache(path: str | os.PathLike) -> int:
    """Write the algorithm choices to a text file (replaced atomically); returns how many."""
    return int(core.algo_cache_save(os.fspath(path)))


def load_cache(path: str | os.PathLike) -> dict[str, Any]:
    """Read choices written by :func:`save_cache`. Entries written with another cuDNN version, or
    for a device ordinal that now names another GPU, are skipped. Returns
    ``{"loaded": n, "skipped": m, "reason": "..."}``. A file that is not a knetcnn cache raises
    ``ValueError`` naming the line."""
    return dict(core.algo_cache_load(os.fspath(path)))
