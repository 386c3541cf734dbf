"""Fused single-pass retrieval and stepping fit, compiled with numba.

One parallel loop over image rows (``numba.prange``), each row taken in chunks of
``CHUNK_PIXELS``: the raw steps of a chunk are read once and accumulated into (a0, c, s)
buffers with the (3, n) least-squares solver, three steps a pass; then one loop writes every
output of the chunk (a0, a1, phi, T, V, dphi, mu, eps).  The numbers and NaN rules are those
of the numpy path in ``kernels``, in the same work dtype (float32 for panel data, float64
for float64 stacks); the fit rounds as BLAS does (one multiply-add a step, in step order).

Vectorised (AVX-512 here): every loop is branch-free and call-free.  Arithmetic stays in the
work dtype (numba types float32 * uint16 as float64: ``_as_work`` converts first); float32
atan2 and -ln are Cephes polynomials (~1 ulp) written with selects, the log's exponent and
mantissa split by a bitcast (``_exponent``, ``_mantissa``); the runtime switches (dark,
saturation, saturated reference) choose whole loops.  float64 stacks use libm (exact).
``fastmath`` is only ``contract`` (fused multiply-add): NaN, inf and signed zeros stay exact.

This module imports numba (ImportError without it); ``kernels`` imports it on first use
only.  ``cache=True`` keeps the machine code in ``__pycache__``: the first call of a new
dtype compiles for 10-40 s (load of the machine), later processes load it in about a second.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

_DTYPES = frozenset(np.dtype(name) for name in (
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"))
_FASTMATH = {"contract"}
"""Only fused multiply-add (the BLAS path's rounding of the fit; NaN and inf kept exact)."""
_OPTIONS = {"cache": True, "error_model": "numpy", "fastmath": _FASTMATH}
_jit = numba.njit(parallel=True, nogil=True, **_OPTIONS)
_inline = numba.njit(inline="always", **_OPTIONS)
CHUNK_ROWS = 16
"""Rows per work item of the parallel loop: dynamic scheduling, so a core busy with another
process does not hold up the whole image (static halves did on the shared 2-core machine)."""
CHUNK_PIXELS = 512
"""Pixels of a row per inner pass: the (a0, c, s) buffers (6 kB in float32) and the chunk's
raw steps stay in L1 cache whatever the row length (256 to 2048 timed alike here)."""
_LOCK = threading.Lock()
"""One kernel call at a time: numba's workqueue threading layer (the fallback without
OpenMP or TBB) aborts the process on concurrent parallel launches from two threads."""


def supports(stack: np.ndarray) -> bool:
    """Whether the compiled kernels take this stack (native-endian integers and floats)."""
    return stack.dtype in _DTYPES and stack.dtype.isnative


@intrinsic
def _exponent(typingctx, value):
    """Unbiased binary exponent of a positive normal float32, as float32 (bitcast)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        biased = builder.and_(builder.lshr(bits, ir.Constant(ir.IntType(32), 23)),
                              ir.Constant(ir.IntType(32), 0xFF))
        exponent = builder.sub(biased, ir.Constant(ir.IntType(32), 127))
        return builder.sitofp(exponent, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _mantissa(typingctx, value):
    """The significand of a float32 in [1, 2) (bitcast; the exponent set to 0)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        bits = builder.or_(builder.and_(bits, ir.Constant(ir.IntType(32), 0x7FFFFF)),
                           ir.Constant(ir.IntType(32), 0x3F800000))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


def _as_work(value, like):
    """``value`` converted to the type of ``like`` (the work dtype): compiled only."""
    raise NotImplementedError


@overload(_as_work, inline="always")
def _as_work_impl(value, like):
    if like == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


def atan2_float32(y, x):  # pragma: no cover - compiled
    """float32 atan2 without branches (vectorises; Cephes atanf, ~1 ulp); signs of zero and
    NaN as numpy's (-pi..pi; infinite arguments not handled).  Compiled through ``_atan2``."""
    ay = abs(y)
    ax = abs(x)
    big = max(ay, ax)
    q = min(ay, ax) / (big if big > 0 else np.float32(1.0))  # 0/0 -> 0, no division branch
    high = q > np.float32(0.41421356)
    z = (q - np.float32(1.0)) / (q + np.float32(1.0)) if high else q
    zz = z * z
    r = ((((np.float32(8.05374449538e-2) * zz - np.float32(1.38776856032e-1)) * zz
           + np.float32(1.99777106478e-1)) * zz - np.float32(3.33329491539e-1)) * zz * z + z)
    r = r + np.float32(0.78539816) if high else r
    r = np.float32(1.5707964) - r if ay > ax else r
    r = np.float32(3.1415927) - r if np.copysign(np.float32(1.0), x) < 0 else r
    r = np.copysign(r, y)
    return r if (x == x) & (y == y) else np.float32(np.nan)  # noqa: PLR0124 (NaN test)


def minus_log_float32(v):  # pragma: no cover - compiled
    """-ln(v) of a float32 v > 0 without branches (vectorises; Cephes logf, ~1 ulp),
    subnormal and infinite v included; meaningless for v <= 0 or NaN (callers mask them).
    Compiled through ``_minus_log``."""
    tiny = v < np.float32(1.1754944e-38)  # subnormal: scaled by 2**23 first
    v = v * np.float32(8388608.0) if tiny else v
    m = _mantissa(v)
    e = _exponent(v) - (np.float32(23.0) if tiny else np.float32(0.0))
    high = m > np.float32(1.41421356)  # to [sqrt(1/2), sqrt(2)]
    m = m * np.float32(0.5) if high else m
    e = e + np.float32(1.0) if high else e
    x = m - np.float32(1.0)
    z = x * x
    y = np.float32(7.0376836292e-2)
    y = y * x - np.float32(1.1514610310e-1)
    y = y * x + np.float32(1.1676998740e-1)
    y = y * x - np.float32(1.2420140846e-1)
    y = y * x + np.float32(1.4249322787e-1)
    y = y * x - np.float32(1.6668057665e-1)
    y = y * x + np.float32(2.0000714765e-1)
    y = y * x - np.float32(2.4999993993e-1)
    y = y * x + np.float32(3.3333331174e-1)
    y = y * x * z
    y = y + e * np.float32(-2.12194440e-4) - np.float32(0.5) * z
    r = -(x + y + e * np.float32(0.693359375))
    return -np.float32(np.inf) if v == np.float32(np.inf) else r


def _atan2(y, x):
    """atan2 in the work dtype: ``atan2_float32`` for float32, libm for float64 (in compiled
    code; as numpy's here)."""
    return np.arctan2(y, x)


@overload(_atan2, jit_options=_OPTIONS)
def _atan2_impl(y, x):
    if y == types.float32:
        return atan2_float32
    return lambda y, x: np.arctan2(y, x)


def _minus_log(v):
    """-ln(v) in the work dtype: ``minus_log_float32`` for float32, libm for float64 (in
    compiled code; as numpy's here)."""
    return -np.log(v)


@overload(_minus_log, jit_options=_OPTIONS)
def _minus_log_impl(v):
    if v == types.float32:
        return minus_log_float32
    return lambda v: -np.log(v)


@_inline
def _accumulate(stack, solver, i, start, stop, h0, hc, hs):  # pragma: no cover - compiled
    """(a0, c, s) of pixels start:stop of row i into h0, hc, hs.

    Steps are added three at a time (a third of the buffer loads and stores), each as one
    fused multiply-add in step order: the rounding of BLAS's sgemm, bit for bit on a flat
    pixel whose c and s are pure round-off."""
    n = stack.shape[0]
    size = stop - start
    row = stack[0, i, start:stop]
    w0, wc, ws = solver[0, 0], solver[1, 0], solver[2, 0]
    for j in range(size):
        value = _as_work(row[j], w0)  # float32 arithmetic (numba promotes to float64)
        h0[j] = w0 * value
        hc[j] = wc * value
        hs[j] = ws * value
    k = 1
    while k + 3 <= n:
        ra = stack[k, i, start:stop]
        rb = stack[k + 1, i, start:stop]
        rc = stack[k + 2, i, start:stop]
        a0, ac, as_ = solver[0, k], solver[1, k], solver[2, k]
        b0, bc, bs = solver[0, k + 1], solver[1, k + 1], solver[2, k + 1]
        c0, cc, cs = solver[0, k + 2], solver[1, k + 2], solver[2, k + 2]
        for j in range(size):
            va = _as_work(ra[j], w0)
            vb = _as_work(rb[j], w0)
            vc = _as_work(rc[j], w0)
            # left to right: ((h + a*va) + b*vb) + c*vc, one multiply-add each
            h0[j] = h0[j] + a0 * va + b0 * vb + c0 * vc
            hc[j] = hc[j] + ac * va + bc * vb + cc * vc
            hs[j] = hs[j] + as_ * va + bs * vb + cs * vc
        k += 3
    while k < n:
        row = stack[k, i, start:stop]
        a0, ac, as_ = solver[0, k], solver[1, k], solver[2, k]
        for j in range(size):
            value = _as_work(row[j], w0)
            h0[j] = h0[j] + a0 * value
            hc[j] = hc[j] + ac * value
            hs[j] = hs[j] + as_ * value
        k += 1


@_inline
def _peak(stack, i, start, stop, peak):  # pragma: no cover - compiled
    """The raw maximum over the steps of pixels start:stop of row i, into peak."""
    n = stack.shape[0]
    size = stop - start
    row = stack[0, i, start:stop]
    for j in range(size):
        peak[j] = row[j]
    k = 1
    while k + 2 <= n:
        ra = stack[k, i, start:stop]
        rb = stack[k + 1, i, start:stop]
        for j in range(size):
            peak[j] = max(peak[j], ra[j], rb[j])
        k += 2
    if k < n:
        row = stack[k, i, start:stop]
        for j in range(size):
            peak[j] = max(peak[j], row[j])


@_jit
def _fit(stack, solver, a0, a1, phi):  # pragma: no cover - compiled
    """a0, a1, phi of every pixel, written into the three 2-D outputs."""
    _, ny, nx = stack.shape
    width = min(nx, CHUNK_PIXELS)
    for i in numba.prange(ny):
        h0 = np.empty(width, a0.dtype)
        hc = np.empty(width, a0.dtype)
        hs = np.empty(width, a0.dtype)
        for start in range(0, nx, width):
            stop = min(start + width, nx)
            _accumulate(stack, solver, i, start, stop, h0, hc, hs)
            x0 = a0[i, start:stop]
            x1 = a1[i, start:stop]
            p = phi[i, start:stop]
            for j in range(stop - start):
                c = hc[j]
                s = hs[j]
                x0[j] = h0[j]
                x1[j] = np.sqrt(c * c + s * s)
                p[j] = _atan2(-s, c)


@_inline
def _wrap(angle, pi, two_pi):  # pragma: no cover - compiled
    angle = angle - two_pi if angle > pi else angle
    return angle + two_pi if angle <= -pi else angle


@_jit
def _retrieve(stack, solver, dark, ref_a0, ref_a1, ref_phi, sat_ref, saturation, floor,
              with_dark, with_sat_ref, with_saturation, with_ratio, constants,
              a0, a1, phi, t_out, v_out, dphi_out, mu_out, eps_out, bad_out):  # pragma: no cover
    """The retrieval of every pixel (see ``retrieve``), written into the outputs."""
    _, ny, nx = stack.shape
    width = min(nx, CHUNK_PIXELS)
    nan, pi, two_pi = constants[0], constants[1], constants[2]  # in the work dtype
    for i in numba.prange(ny):
        h0 = np.empty(width, a0.dtype)
        hc = np.empty(width, a0.dtype)
        hs = np.empty(width, a0.dtype)
        peak = np.empty(width, stack.dtype)
        bad = np.empty(width, np.bool_)
        for start in range(0, nx, width):
            stop = min(start + width, nx)
            size = stop - start
            _accumulate(stack, solver, i, start, stop, h0, hc, hs)
            if with_dark:  # dark (float64, not copied) subtracted, rounded to the work dtype
                d = dark[i, start:stop]
                for j in range(size):
                    h0[j] = h0[j] - d[j]
            if with_saturation:
                _peak(stack, i, start, stop, peak)
                for j in range(size):
                    bad[j] = peak[j] >= saturation
            else:
                bad[:size] = False
            if with_sat_ref:
                sat = sat_ref[i, start:stop]
                for j in range(size):
                    bad[j] = bad[j] | sat[j]
            r0_row = ref_a0[i, start:stop]
            r1_row = ref_a1[i, start:stop]
            rphi = ref_phi[i, start:stop]
            x0 = a0[i, start:stop]
            x1 = a1[i, start:stop]
            p = phi[i, start:stop]
            t = t_out[i, start:stop]
            dp = dphi_out[i, start:stop]
            mu = mu_out[i, start:stop]
            v = v_out[i, start:stop]
            eps = eps_out[i, start:stop]
            # no calls, no branches (``&``/``|``/``not`` on booleans, ternaries become selects)
            for j in range(size):
                m0 = h0[j]
                c = hc[j]
                s = hs[j]
                r0 = r0_row[j]
                rv = r1_row[j] / r0
                m1 = np.sqrt(c * c + s * s)
                angle = _atan2(-s, c)
                x0[j] = m0
                x1[j] = m1
                p[j] = angle
                b = bad[j] | (not ((r0 > floor) & (rv > 0) & (m0 > floor)))
                bad[j] = b
                ratio = m0 / r0
                t[j] = nan if b else ratio
                dp[j] = nan if b else _wrap(angle - rphi[j], pi, two_pi)
                mu[j] = nan if b | (not ratio > 0) else _minus_log(ratio)
                ratio = m1 / (m0 * rv)  # V and eps (overwritten by the caller without ratio)
                v[j] = nan if b else ratio
                eps[j] = nan if b | (not ratio > 0) else _minus_log(ratio)
            if not with_ratio:
                bad_out[i, start:stop] = bad[:size]

def fit(stack: np.ndarray, solver: np.ndarray, dtype: np.dtype):
    """Per-pixel a0, a1, phi (2-D, ``dtype``) of an (n, ny, nx) stack with a (3, n) solver."""
    _, ny, nx = stack.shape
    out = tuple(np.empty((ny, nx), dtype) for _ in range(3))
    with _LOCK, numba.parallel_chunksize(CHUNK_ROWS):
        _fit(stack, np.ascontiguousarray(solver, dtype=dtype), *out)
    return out


def retrieve(sample, solver, dark, reference_a0, reference_a1, reference_phi,
             saturated_reference, saturation, floor, dtype, with_ratio=True):
    """The fused retrieval; arguments as ``kernels.retrieve_blocks`` (the reference images
    in ``dtype``).  Returns a dict of 2-D images (a0, a1, phi, transmission, dark_field,
    differential_phase, absorption, scattering, bad); with ``with_ratio`` False, ``bad`` is
    the invalid-pixel mask (else a 1 x 1 placeholder) for the caller to finish dark_field
    and scattering itself, e.g. after replacing a1 by its Rice posterior mean."""
    _, ny, nx = sample.shape
    names = ("a0", "a1", "phi", "transmission", "dark_field", "differential_phase",
             "absorption", "scattering")
    out = {name: np.empty((ny, nx), dtype) for name in names}
    # the invalid-pixel mask is returned only when V and eps are left to the caller
    out["bad"] = np.empty((ny, nx) if not with_ratio else (1, 1), np.bool_)
    arguments = (
        sample, np.ascontiguousarray(solver, dtype=dtype),
        np.zeros((1, 1)) if dark is None else np.ascontiguousarray(dark, dtype=np.float64),
        reference_a0, reference_a1, reference_phi,
        np.zeros((1, 1), np.bool_) if saturated_reference is None else saturated_reference,
        0.0 if saturation is None else float(saturation), dtype.type(floor),
        dark is not None, saturated_reference is not None, saturation is not None, with_ratio,
        np.array([np.nan, np.pi, 2 * np.pi], dtype))
    with _LOCK, numba.parallel_chunksize(CHUNK_ROWS):
        _retrieve(*arguments, *(out[name] for name in names), out["bad"])
    return out
