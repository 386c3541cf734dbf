"""Fused single-pass retrieval and stepping fit, compiled with numba.

One parallel loop over image rows (``numba.prange``): each raw step of a row is read once
and accumulated into row buffers of (a0, c, s) with the (3, n) least-squares solver, then
every output of that row (a0, a1, phi, T, V, dphi, mu, eps) is written while the buffers are
in L1 cache.  The numbers and NaN rules are those of the numpy path in ``kernels``, in the
same work dtype (float32 for panel data, float64 for float64 stacks).  float32 atan2 and log
are branch-free Cephes polynomials (~1 ulp), so the loops vectorise; float64 uses libm.

This module imports numba (ImportError without it); ``kernels`` imports it on first use
only.  ``cache=True`` keeps the machine code in ``__pycache__``: the first call of a new
dtype compiles for ~10 s, later processes load it in well under a second.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

_DTYPES = frozenset(np.dtype(name) for name in (
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"))
_jit = numba.njit(parallel=True, cache=True, nogil=True)
CHUNK_ROWS = 16
"""Rows per work item of the parallel loop: dynamic scheduling, so a core busy with another
process does not hold up the whole image (static halves did on the shared 2-core machine)."""
_inline = numba.njit(cache=True, inline="always")
_LOCK = threading.Lock()
"""One kernel call at a time: numba's workqueue threading layer (the fallback without
OpenMP or TBB) aborts the process on concurrent parallel launches from two threads."""


def supports(stack: np.ndarray) -> bool:
    """Whether the compiled kernels take this stack (native-endian integers and floats)."""
    return stack.dtype in _DTYPES and stack.dtype.isnative


@_inline
def atan2_fast(y, x):  # pragma: no cover - compiled
    """float32 atan2 without branches (vectorises; Cephes atanf, ~1 ulp), signs of zero
    as numpy's."""
    ay = abs(y)
    ax = abs(x)
    big = max(ay, ax)
    q = min(ay, ax) / big if big > 0 else np.float32(0.0)
    high = q > np.float32(0.41421356)
    z = (q - np.float32(1.0)) / (q + np.float32(1.0)) if high else q
    zz = z * z
    r = ((((np.float32(8.05374449538e-2) * zz - np.float32(1.38776856032e-1)) * zz
           + np.float32(1.99777106478e-1)) * zz - np.float32(3.33329491539e-1)) * zz * z + z)
    r = r + np.float32(0.78539816) if high else r
    r = np.float32(1.5707964) - r if ay > ax else r
    r = np.float32(3.1415927) - r if np.copysign(np.float32(1.0), x) < 0 else r
    return np.copysign(r, y)


@_jit
def _fit(stack, solver, fast, a0, a1, phi):  # pragma: no cover - compiled
    """a0, a1, phi of every pixel, written into the three 2-D outputs."""
    n, ny, nx = stack.shape
    for i in numba.prange(ny):
        h0 = np.zeros(nx, a0.dtype)
        hc = np.zeros(nx, a0.dtype)
        hs = np.zeros(nx, a0.dtype)
        for k in range(n):
            w0, wc, ws = solver[0, k], solver[1, k], solver[2, k]
            for j in range(nx):
                value = stack[k, i, j]
                h0[j] += w0 * value
                hc[j] += wc * value
                hs[j] += ws * value
        for j in range(nx):
            c = hc[j]
            s = hs[j]
            a0[i, j] = h0[j]
            a1[i, j] = np.sqrt(c * c + s * s)
        _phase(hc, hs, phi[i], fast)


@_inline
def _phase(hc, hs, out, fast):  # pragma: no cover - compiled
    if fast:
        for j in range(hc.size):
            out[j] = atan2_fast(-hs[j], hc[j])
    else:
        for j in range(hc.size):
            out[j] = np.arctan2(-hs[j], hc[j])


@_inline
def _negative_log(values, bad, out, fast, bits, mant):  # pragma: no cover - compiled
    """out = -ln(values), NaN where bad or values <= 0 (or NaN)."""
    nan = np.nan
    if fast:
        ivalues = values.view(np.int32)
        mfloat = mant.view(np.float32)
        for j in range(values.size):
            b = ivalues[j]
            bits[j] = ((b >> 23) & 0xFF) - 127
            mant[j] = (b & 0x7FFFFF) | 0x3F800000
        for j in range(values.size):
            m = mfloat[j]
            e = np.float32(bits[j])
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
            ok = (values[j] > 0) & (bad[j] == False)  # noqa: E712 (no branch)
            out[j] = r if ok else nan
        for j in range(values.size):  # zero, subnormal or infinite: exact, rare
            v = values[j]
            normal = np.float32(1.1754944e-38) <= v <= np.float32(3.4028235e38)
            if out[j] == out[j] and not normal:
                out[j] = -np.log(v)
    else:
        for j in range(values.size):
            v = values[j]
            out[j] = -np.log(v) if (v > 0) & (bad[j] == False) else nan  # noqa: E712


@_jit
def _retrieve(stack, solver, dark, ref_a0, ref_vis, ref_phi, sat_ref, saturation, floor,
             with_dark, with_sat_ref, with_saturation, with_ratio, fast,
             a0, a1, phi, t_out, v_out, dphi_out, mu_out, eps_out, bad_out):  # pragma: no cover
    """The retrieval of every pixel (see ``retrieve``), written into the outputs."""
    n, ny, nx = stack.shape
    nan = np.nan
    pi = np.pi
    two_pi = 2 * np.pi
    for i in numba.prange(ny):
        h0 = np.zeros(nx, a0.dtype)
        hc = np.zeros(nx, a0.dtype)
        hs = np.zeros(nx, a0.dtype)
        bits = np.empty(nx, np.int32)
        mant = np.empty(nx, np.int32)
        peak = stack[0, i].copy()  # in the stack's own type (vectorised max)
        for k in range(n):
            w0, wc, ws = solver[0, k], solver[1, k], solver[2, k]
            for j in range(nx):
                value = stack[k, i, j]
                h0[j] += w0 * value
                hc[j] += wc * value
                hs[j] += ws * value
                if with_saturation:
                    peak[j] = value if value > peak[j] else peak[j]
        bad = np.empty(nx, np.bool_)
        r0_row = ref_a0[i]
        rv_row = ref_vis[i]
        dark_row = dark[i] if with_dark else dark[0]
        sat_row = sat_ref[i] if with_sat_ref else sat_ref[0]
        t = t_out[i]
        v = v_out[i]
        x0 = a0[i]
        x1 = a1[i]
        for j in range(nx):
            # dark (float64, not copied) subtracted, rounded to the work dtype on the store
            x0[j] = h0[j] - dark_row[j] if with_dark else h0[j]
            m0 = x0[j]
            c = hc[j]
            s = hs[j]
            m1 = np.sqrt(c * c + s * s)
            x1[j] = m1
            r0 = r0_row[j]
            rv = rv_row[j]
            # bitwise, not short-circuit: keeps the loop free of branches (vectorised)
            ok = (r0 > floor) & (rv > 0) & (m0 > floor)
            if with_saturation:
                ok = ok & (peak[j] < saturation)
            if with_sat_ref:
                ok = ok & (sat_row[j] == False)  # noqa: E712
            b = ok == False  # noqa: E712
            bad[j] = b
            t[j] = nan if b else m0 / r0
            if with_ratio:
                v[j] = nan if b else m1 / (m0 * rv)
        p = phi[i]
        _phase(hc, hs, p, fast)
        d = dphi_out[i]
        rphi_row = ref_phi[i]
        for j in range(nx):
            e = p[j] - rphi_row[j]
            e = e - two_pi if e > pi else e
            e = e + two_pi if e <= -pi else e
            d[j] = nan if bad[j] else e
        _negative_log(t, bad, mu_out[i], fast, bits, mant)
        if with_ratio:
            _negative_log(v, bad, eps_out[i], fast, bits, mant)
        else:
            bad_out[i] = bad


def fit(stack: np.ndarray, solver: np.ndarray, dtype: np.dtype):
    """Per-pixel a0, a1, phi (2-D, ``dtype``) of an (n, ny, nx) stack with a (3, n) solver."""
    _, ny, nx = stack.shape
    out = tuple(np.empty((ny, nx), dtype) for _ in range(3))
    with _LOCK, numba.parallel_chunksize(CHUNK_ROWS):
        _fit(stack, np.ascontiguousarray(solver, dtype=dtype), dtype == np.float32, *out)
    return out


def retrieve(sample, solver, dark, reference_a0, reference_visibility, reference_phi,
             saturated_reference, saturation, floor, dtype, with_ratio=True):
    """The fused retrieval; arguments as ``kernels.retrieve_blocks``.  Returns a dict of 2-D
    images (a0, a1, phi, transmission, dark_field, differential_phase, absorption,
    scattering, bad); with ``with_ratio`` False, dark_field and scattering are left unset
    (the caller finishes them, e.g. after replacing a1 by its Rice posterior mean) and
    ``bad`` is the invalid-pixel mask, else a 1 x 1 placeholder."""
    _, ny, nx = sample.shape
    names = ("a0", "a1", "phi", "transmission", "dark_field", "differential_phase",
             "absorption", "scattering")
    out = {name: np.empty((ny, nx), dtype) for name in names}
    # the invalid-pixel mask is returned only when V and eps are left to the caller
    out["bad"] = np.empty((ny, nx) if not with_ratio else (1, 1), np.bool_)
    dummy = np.zeros((1, 1), np.float64)
    arguments = (
        sample, np.ascontiguousarray(solver, dtype=dtype),
        dummy if dark is None else np.ascontiguousarray(dark, dtype=np.float64),
        reference_a0, reference_visibility, reference_phi,
        np.zeros((1, 1), np.bool_) if saturated_reference is None else saturated_reference,
        0.0 if saturation is None else float(saturation), dtype.type(floor),
        dark is not None, saturated_reference is not None, saturation is not None, with_ratio,
        dtype == np.float32)
    with _LOCK, numba.parallel_chunksize(CHUNK_ROWS):
        _retrieve(*arguments, *(out[name] for name in names), out["bad"])
    return out
