"""A stored reference fit: the open-beam stepping curve of one reference scan, kept in an
HDF5 file so that later projections skip their reference scan (the low-dose protocol).

``reference_fit.h5``::

    /  @kind="talbot-lau reference fit"  @version=1
      a0, a1: float32 (rows, columns)  dark-subtracted mean and amplitude, ADU per image
              at ``exposure_s``
      phi:    float32 (rows, columns)  fringe phase, rad
      @exposure_s (s per step), @kv (kV), @ma (mA), @region ([row0, col0, rows, columns],
      [] for the full panel), @binning, @period_um, @positions_um (G2, um), @time (POSIX s,
      the source run's start), @source_uid

A stored fit is used only when it matches the instrument (:func:`reference_mismatch`:
region, binning, kV, mA, G2 period) and is younger than ``scan.reference_max_age_h``: the
fringe phase and visibility drift with temperature, so an old reference leaves a
phase and visibility error in every retrieval.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from reconstruction import SteppingFit

from ..errors import TalbotLauError

KIND = "talbot-lau reference fit"
VERSION = 1
KV_TOLERANCE = 0.1
"""kV a stored fit may differ from the plan's (kV): the spectrum sets the fringe visibility."""
MA_TOLERANCE = 0.01
"""Relative mA difference a stored fit may have: a0 and a1 scale with the tube current."""


class ReferenceFitError(TalbotLauError, ValueError):
    """A stored reference fit that cannot be read, or does not fit the instrument."""


@dataclass(frozen=True)
class ReferenceFit:
    """A dark-subtracted reference fit (ADU per image at ``exposure_s``) and what it was
    taken with."""

    fit: SteppingFit
    exposure_s: float
    kv: float
    ma: float
    region: tuple[int, int, int, int] | None
    binning: int
    period_um: float
    positions_um: tuple[float, ...]
    time: float
    source_uid: str

    def metadata(self, path: str | Path) -> dict:
        """What a start document records of it (plain JSON)."""
        return {"path": str(Path(path).resolve()), "source_uid": self.source_uid, "time": self.time,
                "exposure_s": self.exposure_s, "kv": self.kv, "ma": self.ma}


def write_reference_fit(path: str | Path, reference: ReferenceFit) -> Path:
    """Write ``reference`` to ``path`` (HDF5); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update(kind=KIND, version=VERSION, exposure_s=reference.exposure_s, kv=reference.kv,
                       ma=reference.ma, region=list(reference.region or ()), binning=reference.binning,
                       period_um=reference.period_um, positions_um=list(reference.positions_um),
                       time=reference.time, source_uid=reference.source_uid)
        for name in ("a0", "a1", "phi"):
            f.create_dataset(name, data=np.asarray(getattr(reference.fit, name), np.float32))
        f["a0"].attrs["units"] = f["a1"].attrs["units"] = "ADU"
        f["phi"].attrs["units"] = "rad"
    return path


def read_reference_fit(path: str | Path) -> ReferenceFit:
    """Read a stored fit; :class:`ReferenceFitError` naming the file and what is wrong."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") != KIND:
                raise ReferenceFitError(f"reference={str(path)!r}: not a reference fit file "
                                        f"(kind {f.attrs.get('kind')!r}, expected {KIND!r})")
            a = dict(f.attrs)
            fit = SteppingFit(a0=f["a0"][()], a1=f["a1"][()], phi=f["phi"][()])
    except ReferenceFitError:
        raise
    except (OSError, KeyError) as err:
        raise ReferenceFitError(f"reference={str(path)!r}: cannot read the reference fit: {err}") from None
    region = tuple(int(v) for v in a["region"]) or None
    return ReferenceFit(fit, float(a["exposure_s"]), float(a["kv"]), float(a["ma"]), region,
                        int(a["binning"]), float(a["period_um"]),
                        tuple(float(v) for v in a["positions_um"]), float(a["time"]), str(a["source_uid"]))


def reference_mismatch(reference: ReferenceFit, *, region, binning: int, kv: float, ma: float,
                       period_um: float, max_age_h: float, now: float | None = None) -> str | None:
    """Why ``reference`` cannot serve a projection with these settings (text naming the
    field), or None.  ``region`` is the detector's [row0, col0, rows, columns] or None."""
    now = _time.time() if now is None else now
    region = tuple(region) if region else None
    if reference.region != region:
        return f"detector region {reference.region}, the instrument's is {region}"
    if reference.binning != binning:
        return f"binning {reference.binning}, the instrument's is {binning}"
    if abs(reference.kv - kv) > KV_TOLERANCE:
        return f"kv {reference.kv:g} kV, the plan's is {kv:g} kV"
    if abs(reference.ma - ma) > MA_TOLERANCE * ma:
        return f"ma {reference.ma:g} mA, the plan's is {ma:g} mA"
    if not np.isclose(reference.period_um, period_um, rtol=1e-6):
        return f"G2 period {reference.period_um:g} um, the instrument's is {period_um:g} um"
    age_h = (now - reference.time) / 3600.0
    if age_h > max_age_h:
        return (f"taken {age_h:.1f} h ago, older than scan.reference_max_age_h = {max_age_h:g} h "
                "(the fringe drifts: take a new reference)")
    if age_h < -1 / 60:
        return f"its time lies {-age_h:.2f} h in the future (clock?)"
    return None
