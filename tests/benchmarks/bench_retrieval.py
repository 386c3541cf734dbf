"""Benchmark: full-frame retrieval (1536 x 1920 x 9 uint16), side by side in one run.

Run: python tests/benchmarks/bench_retrieval.py [--repeat N]
Prints medians, the candidates called in turn (round-robin) so that all see the same load
of the shared machine: `retrieve` on the fused numba kernel and on the numpy fallback
(``TALBOT_LAU_KERNEL=numpy``), against a fitted reference and against a raw one; the read
pass over the raw stack (`stack.sum(axis=0, dtype=np.uint32)`); the naive float64 FFT
retrieval of sample and reference as published scripts do it; one public peer approach, a
vectorised least-squares fit at equidistant steps (a precomputed pseudo-inverse applied
with tensordot to the reshaped float64 stack, as XPCIpy and dpc_reconstruction do) of
sample and reference; the numba first-call time (cold compile in a fresh process without
cache, and the cache load here); peak extra memory of `retrieve` (tracemalloc).
Goals (issue 17): retrieve <= 3x the read pass, >= 15x faster than the naive FFT.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from timing import interleaved_medians

import reconstruction
from reconstruction import fit_stepping, retrieve
from reconstruction.kernels import KERNEL_VARIABLE

SHAPE = (9, 1536, 1920)


def make_stack(seed: int, transmission: float = 1.0) -> np.ndarray:
    """A noisy uint16 stepping set with a Moire phase and ~25 000 ADU, visibility ~0.2."""
    rng = np.random.default_rng(seed)
    n, ny, nx = SHAPE
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    phase = (2 * np.pi * 1.5 * (x / nx + 0.3 * y / ny)).astype(np.float32)
    out = np.empty(SHAPE, np.uint16)
    for k in range(n):
        frame = 25000 * transmission * (1 + 0.2 * np.cos(2 * np.pi * k / n + phase))
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * 150
        out[k] = np.clip(frame, 0, 65535)
    return out


def naive_fft(stack: np.ndarray):
    """The harmonics as published scripts get them: a float64 FFT over the step axis."""
    spectrum = np.fft.fft(stack.astype(np.float64), axis=0)
    n = stack.shape[0]
    return np.abs(spectrum[0]) / n, 2 * np.abs(spectrum[1]) / n, np.angle(spectrum[1])


def compare(sample_fit, reference_fit, dark: np.ndarray):
    """T, V, dphi, mu, eps of two (a0, a1, phi) fits, the published way (float64)."""
    a0, a1, phi = sample_fit
    r0, r1, rphi = reference_fit
    a0, r0 = a0 - dark, r0 - dark
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a0 / r0
        v = (a1 / a0) / (r1 / r0)
        dphi = np.angle(np.exp(1j * (phi - rphi)))
        return t, v, dphi, -np.log(t), -np.log(v)


def naive_fft_retrieval(sample: np.ndarray, reference: np.ndarray, dark: np.ndarray):
    """A whole retrieval the published way: FFT of sample and reference, then eq. 1."""
    return compare(naive_fft(sample), naive_fft(reference), dark)


def lstsq_fit(stack: np.ndarray):
    """Peer approach: the (3, n) pseudo-inverse at equidistant steps applied to the reshaped
    float64 stack with tensordot (XPCIpy, dpc_reconstruction)."""
    n = stack.shape[0]
    t = 2 * np.pi * np.arange(n) / n
    pinv = np.linalg.pinv(np.stack([np.ones(n), np.cos(t), np.sin(t)], axis=1))
    a0, c, s = np.tensordot(pinv, stack.reshape(n, -1).astype(np.float64), axes=1)
    shape = stack.shape[1:]
    return a0.reshape(shape), np.hypot(c, s).reshape(shape), np.arctan2(-s, c).reshape(shape)


def lstsq_retrieval(sample: np.ndarray, reference: np.ndarray, dark: np.ndarray):
    """The peer's whole retrieval: least-squares fits of sample and reference, then eq. 1."""
    return compare(lstsq_fit(sample), lstsq_fit(reference), dark)


def with_kernel(kernel: str, function):
    """``function`` run with ``$TALBOT_LAU_KERNEL`` set to ``kernel``."""
    def run():
        previous = os.environ.get(KERNEL_VARIABLE)
        os.environ[KERNEL_VARIABLE] = kernel
        try:
            return function()
        finally:
            if previous is None:
                del os.environ[KERNEL_VARIABLE]
            else:
                os.environ[KERNEL_VARIABLE] = previous
    return run


COLD = ("import time, numpy as np; from reconstruction import retrieve; "
        "s = np.random.default_rng(0).integers(1000, 30000, (9, 64, 64), dtype=np.uint16); "
        "t = time.perf_counter(); retrieve(s, s, np.full((64, 64), 100.0)); "
        "print(time.perf_counter() - t)")


def cold_compile_seconds() -> float:
    """First call of `retrieve` (uint16) in a fresh process with an empty numba cache (s)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, **{KERNEL_VARIABLE: "numba"})
        out = subprocess.run([sys.executable, "-c", COLD], env=env, check=True,
                             capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    cold = cold_compile_seconds()
    raw_reference = make_stack(1)
    sample = make_stack(2, transmission=0.8)
    dark = np.full(SHAPE[1:], 118.0)
    started = time.perf_counter()
    with_kernel("numba", lambda: retrieve(sample, raw_reference, dark))()
    first = time.perf_counter() - started
    reference = fit_stepping(raw_reference)
    slow = max(3, args.repeat // 2)
    fast = {
        "retrieve, numba (fitted reference)":
            with_kernel("numba", lambda: retrieve(sample, reference, dark)),
        "retrieve, numpy fallback (fitted reference)":
            with_kernel("numpy", lambda: retrieve(sample, reference, dark)),
        "read pass: stack.sum(axis=0, dtype=np.uint32)":
            lambda: sample.sum(axis=0, dtype=np.uint32),
        "retrieve, numba (raw reference: both stacks)":
            with_kernel("numba", lambda: retrieve(sample, raw_reference, dark)),
        "retrieve, numpy fallback (raw reference)":
            with_kernel("numpy", lambda: retrieve(sample, raw_reference, dark)),
    }
    rows = list(interleaved_medians(fast, args.repeat).items())
    rows += list(interleaved_medians({
        "naive float64 FFT retrieval (sample + reference)":
            lambda: naive_fft_retrieval(sample, raw_reference, dark),
        "peer: pinv + tensordot lstsq (sample + reference)":
            lambda: lstsq_retrieval(sample, raw_reference, dark),
        "read pass (again, with the slow ones)": lambda: sample.sum(axis=0, dtype=np.uint32),
    }, slow).items())
    times = dict(rows)
    read = times["read pass: stack.sum(axis=0, dtype=np.uint32)"]
    ours = times["retrieve, numba (fitted reference)"]
    ours_raw = times["retrieve, numba (raw reference: both stacks)"]
    naive = times["naive float64 FFT retrieval (sample + reference)"]
    tracemalloc.start()
    with_kernel("numba", lambda: retrieve(sample, reference, dark))()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"reconstruction measured: {os.path.dirname(reconstruction.__file__)}")
    print(f"full frame {SHAPE[1]} x {SHAPE[2]} x {SHAPE[0]} uint16 ({sample.nbytes / 1e6:.0f} MB), "
          f"{os.cpu_count()} cores, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}, "
          "medians:")
    print(f"{'what':<52}{'seconds':>9}{'x read pass':>13}")
    for name, seconds in rows:
        print(f"{name:<52}{seconds:>9.4f}{seconds / read:>13.2f}")
    print(f"numba first call: {cold:.1f} s cold compile (fresh process, empty cache, 64 x 64); "
          f"{first:.2f} s first full-frame call here (cache loaded, reference fitted)")
    print(f"naive FFT / retrieve: {naive / ours:.1f}x (fitted reference), "
          f"{naive / ours_raw:.1f}x (raw reference, same work as the naive)")
    print(f"peak extra memory of retrieve: {peak / sample.nbytes:.2f}x the raw stack")
    print(f"goals: retrieve <= 3x read pass: {'met' if ours <= 3 * read else 'NOT met'} "
          f"({ours / read:.2f}x); >= 15x faster than the naive FFT: "
          f"{'met' if naive >= 15 * ours else 'NOT met'} ({naive / ours:.1f}x)")


if __name__ == "__main__":
    main()
