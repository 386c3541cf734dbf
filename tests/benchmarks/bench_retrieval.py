"""Benchmark: full-frame retrieval (1536 x 1920 x 9 uint16) against a fitted reference.

Run: python tests/benchmarks/bench_retrieval.py [--repeat N]
Prints medians side by side from one run: our `retrieve`, one read pass over the raw
stack (`stack.sum(axis=0)`), and the naive FFT over the step axis as published scripts do
it (`np.fft.fft(stack, axis=0)` then a0, a1, phi from harmonics 0 and 1); plus the peak
extra memory of `retrieve` (tracemalloc) relative to the raw stack.
Goals (issue 4): retrieve <= 5x the read pass, >= 10x faster than the FFT, memory <= 3x.
"""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np
from timing import median_seconds

from reconstruction import fit_stepping, retrieve

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
    """The harmonics as published scripts get them: an FFT over the step axis."""
    spectrum = np.fft.fft(stack, axis=0)
    n = stack.shape[0]
    return np.abs(spectrum[0]) / n, 2 * np.abs(spectrum[1]) / n, np.angle(spectrum[1])


def naive_fft_retrieval(stack: np.ndarray, reference, dark: np.ndarray):
    """A whole retrieval the published way: FFT, dark subtraction, T, V, dphi, mu, eps."""
    a0, a1, phi = naive_fft(stack)
    a0 = a0 - dark
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a0 / reference.a0
        v = (a1 / a0) / reference.visibility
        dphi = np.angle(np.exp(1j * (phi - reference.phi)))
        return t, v, dphi, -np.log(t), -np.log(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    reference = fit_stepping(make_stack(1))
    sample = make_stack(2, transmission=0.8)
    dark = np.full(SHAPE[1:], 118.0)
    ours = median_seconds(lambda: retrieve(sample, reference, dark), args.repeat)
    read = median_seconds(lambda: sample.sum(axis=0), args.repeat)
    fft = median_seconds(lambda: naive_fft(sample), max(3, args.repeat // 2))
    fft_full = median_seconds(lambda: naive_fft_retrieval(sample, reference, dark), max(3, args.repeat // 2))
    tracemalloc.start()
    retrieve(sample, reference, dark)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"full frame {SHAPE[1]} x {SHAPE[2]} x {SHAPE[0]} uint16 ({sample.nbytes / 1e6:.0f} MB), medians:")
    print(f"{'what':<50}{'seconds':>9}{'x read pass':>13}")
    for name, seconds in (("retrieve (ours, against a fitted reference)", ours),
                          ("read pass: stack.sum(axis=0)", read),
                          ("naive np.fft.fft over the step axis", fft),
                          ("naive FFT retrieval (fft + T, V, dphi, mu, eps)", fft_full)):
        print(f"{name:<50}{seconds:>9.3f}{seconds / read:>13.1f}")
    print(f"retrieve is {fft / ours:.1f}x faster than the FFT alone, {fft_full / ours:.1f}x than "
          f"the naive FFT retrieval; "
          f"peak extra memory {peak / sample.nbytes:.2f}x the raw stack")
    print(f"goals: <= 5x read pass: {'met' if ours <= 5 * read else 'NOT met'}; "
          f">= 10x faster than FFT: {'met' if fft >= 10 * ours else 'NOT met'}; "
          f"memory <= 3x: {'met' if peak <= 3 * sample.nbytes else 'NOT met'}")


if __name__ == "__main__":
    main()
