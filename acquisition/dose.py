"""Planned mean glandular dose (mGy) from the tube settings and the exposure time.

Paper (Scherer et al. 2016, Methods "Dose"): 0.89 mGy/s mean glandular dose at 40 kVp and
70 mA for 4.5 cm of breast, so 9 steps x 9 s give 72 mGy per projection.  We scale the
rate linearly with tube current and with the square of the tube voltage (air kerma of a
tube at fixed filtration grows roughly as kVp^2).  Only frames with the sample in the beam
count: dark frames make no X-rays and reference frames see no sample.
"""

from __future__ import annotations

from .config import DoseConfig


def dose_rate_mgy_per_s(dose: DoseConfig, kv: float, ma: float) -> float:
    """Mean glandular dose rate (mGy/s) at ``kv`` (kV) and ``ma`` (mA)."""
    return dose.mgd_rate_mgy_per_s * (kv / dose.reference_kv) ** 2 * (ma / dose.reference_ma)


def planned_dose_mgy(dose: DoseConfig, kv: float, ma: float, sample_exposure_s: float) -> float:
    """Mean glandular dose (mGy) of ``sample_exposure_s`` seconds of sample exposure."""
    return dose_rate_mgy_per_s(dose, kv, ma) * sample_exposure_s
