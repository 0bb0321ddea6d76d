"""The compiled kernels of the sparse Langevin path: build, load, call.

`sparse_gen_tf/kernels/sparse_matmul.cc` holds four TensorFlow CPU ops, two pairs:

    sparse_rows_matmul(x [M, K], w [K, N]) -> [M, N]     x @ w, skipping x's zeros
    masked_matmul_t(g [M, N], w [K, N], mask [M, K])     (g @ wᵀ) where mask != 0, else 0
    sparse_transposed_conv(x [B, h, w, c_in], kernel [c_in, k, k, c_out], stride)
        -> [B, h*s, w*s, c_out]: TransposedConv's 'same' deconvolution, skipping x's zeros
    masked_transposed_conv_t(g [B, h*s, w*s, c_out], kernel, mask [B, h, w, c_in], stride)
        -> its transpose, computed only where mask != 0

Each pair is a transposed conv's forward product on a TopK-sparse map (only the kept
units paint their basis patches, Eq. 3) and its backward product for ∂/∂z (only the kept
units read the residual back): the first for kernel == stride (disjoint cells, one
matmul row per cell), the second for kernel > stride (overlapping patches). TensorFlow
ships no kernel that does this faster than a dense matmul at the paper's 6.25%, so these
are compiled here, at first use, with the C++ compiler ($CXX, else g++ or c++) and
TensorFlow's own headers and flags (`tf.sysconfig`), into a cache directory
($SPARSE_GEN_TF_CACHE, else ~/.cache/sparse_gen_tf) keyed by the source, TensorFlow's
version and the CPU, once per machine. Without a compiler, `load()` says why, and
`learning/gradient_path.py` keeps the dense path.

The ops are not XLA ops: a Langevin loop that calls them runs as a TensorFlow graph, with
the element-wise work between them compiled by XLA in small functions
(`Generator.langevin_gradient_fn`).
"""

import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import tensorflow as tf
from absl import logging

SOURCE = pathlib.Path(__file__).resolve().parent.parent / "kernels" / "sparse_matmul.cc"


def cache_dir():
    """Where built kernels are kept: $SPARSE_GEN_TF_CACHE, else ~/.cache/sparse_gen_tf."""
    return pathlib.Path(os.environ.get("SPARSE_GEN_TF_CACHE")
                        or pathlib.Path.home() / ".cache" / "sparse_gen_tf")


def _compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _cpu_signature():
    """The CPU's model and feature flags: the build uses -march=native, so a cache shared
    between machines (a network home) must not hand one CPU's build to another."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


# Tried in turn until one builds. -march=native on a CPU with AVX512-FP16 (Sapphire
# Rapids and later) makes GCC 12 compile the FP16 packet code of TensorFlow's bundled
# Eigen, which it rejects ("expected initializer before '<'" in PacketMathFP16.h); the
# kernels use no half floats, so that extension is turned off. A compiler that does not
# know the flag (GCC < 12) knows no AVX512-FP16 either, and builds with -march=native alone.
_TARGET_FLAGS = (("-march=native", "-mno-avx512fp16"), ("-march=native",))


def _build_command(compiler, output, target=_TARGET_FLAGS[0]):
    return [compiler, "-shared", str(SOURCE), "-o", str(output), "-fPIC", "-O3",
            *target, "-fopenmp-simd", "-w", *tf.sysconfig.get_compile_flags(),
            *tf.sysconfig.get_link_flags()]


def _first_error(stderr):
    """The compiler's first error line, else its last line: what a one-line reason shows.
    "error:" and not "error": the include chain before it names headers like errors.h."""
    lines = stderr.strip().splitlines() or ["(no output)"]
    return next((line.strip() for line in lines if "error:" in line), lines[-1].strip())


@functools.cache
def _load():
    """(the loaded op module, None) or (None, why not)."""
    compiler = _compiler()
    if not compiler:
        return None, "no C++ compiler (set $CXX or install g++)"
    key = hashlib.sha256("\n".join([
        SOURCE.read_text(), tf.__version__, tf.__file__, _cpu_signature(),
        " ".join(_build_command(compiler, "out"))]).encode()).hexdigest()[:16]
    library = cache_dir() / f"sparse_matmul-{key}.so"
    if not library.exists():
        logging.info("Building the sparse kernels into %s (once per machine, ~10 s)", library)
        try:
            library.parent.mkdir(parents=True, exist_ok=True)
            # Build beside the target and rename: a concurrent process or a killed build
            # never leaves a half-written library under the final name.
            with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
                partial = pathlib.Path(scratch) / library.name
                for target in _TARGET_FLAGS:
                    result = subprocess.run(_build_command(compiler, partial, target),
                                            capture_output=True, text=True, timeout=600)
                    if not result.returncode:
                        break
                else:  # the last try's reason: the first may only be an unknown flag
                    return None, (f"building {SOURCE.name} with {compiler} failed: "
                                  f"{_first_error(result.stderr)}")
                os.replace(partial, library)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, (f"building {SOURCE.name} with {compiler} into {library.parent} "
                          f"failed: {error}")
    try:
        return tf.load_op_library(str(library)), None
    except (tf.errors.NotFoundError, OSError) as error:
        return None, f"loading {library} failed: {error}"


def load():
    """The op module, built at first use; None (and a logged reason) when it cannot be."""
    module, reason = _load()
    if module is None:
        logging.log_first_n(logging.WARNING, "Sparse kernels unavailable, the Langevin "
                            "loop stays dense: %s", 1, reason)
    return module


def unavailable_reason():
    """None when the kernels load, else one line saying why not."""
    return _load()[1]


def sparse_rows_matmul(x, w):
    """x [M, K] @ w [K, N] -> [M, N] float32, multiplying only x's non-zero entries."""
    return load().sparse_rows_matmul(x, w)


def sparse_transposed_conv(x, kernel, stride):
    """TransposedConv's deconvolution of x [B, h, w, c_in] by kernel [c_in, k, k, c_out]
    (no bias) -> [B, h*stride, w*stride, c_out], painting only x's non-zero units."""
    return load().sparse_transposed_conv(x, kernel, stride=stride)


def masked_transposed_conv_t(g, kernel, mask, stride):
    """The transpose of `sparse_transposed_conv` applied to g [B, h*s, w*s, c_out],
    ⊙ (mask [B, h, w, c_in] != 0), computing only the entries where mask is non-zero."""
    return load().masked_transposed_conv_t(g, kernel, mask, stride=stride)


def masked_matmul_t(g, w, mask):
    """(g [M, N] @ wᵀ, w [K, N]) ⊙ (mask [M, K] != 0) -> [M, K] float32, computing only
    the entries where mask is non-zero."""
    return load().masked_matmul_t(g, w, mask)
