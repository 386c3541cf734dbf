"""Mean glandular dose (mGy) from the measured beam quality, the exposure and the breast.

Method (Dance et al., Phys Med Biol 45:3225, 2000; Dance, Phys Med Biol 35:1211, 1990):
``MGD = K * g(HVL, t) * c``, with K the incident air kerma at the sample (mGy), g the
normalised glandular dose of a breast of compressed thickness t at 50 % glandularity for
the beam's first half-value layer, and c the glandularity correction (1 at 50 %, the only
glandularity this module takes).  The paper (Scherer et al. 2016, Methods "Dose") did the
same: 2.1 mGy/s x 0.422 (HVL 0.8 mm Al, 4.5 cm) = 0.89 mGy/s, 72 mGy for 9 x 9 s.

``G_FACTORS`` are Dance et al. (2000)'s published g-factors (Table for 50 % glandularity,
HVL 0.30-0.60 mm Al, thickness 2-11 cm), typed from the table as reproduced in the
European guidelines and IAEA TRS-457; the values were found in a public mammography dose
calculator's source (a streamlit "Calculadora de DGM", dictionary ``g_values_old``).
HVL 0.8 mm Al lies above the table: per thickness, log g is fitted by least squares as a
straight line in log HVL over all seven tabulated HVLs (g ~ HVL^p, p about 0.9), and that
fit gives g at any HVL (inside the table it reproduces the published values within 3.5 %).
Between thicknesses log g is interpolated linearly in t (extrapolated the same way outside
2-11 cm).  At 0.8 mm Al and 4.5 cm this gives g = 0.434, the paper's 0.422 + 3 %.

Air kerma and HVL are what a lab measures at the reference kV/mA (``DoseConfig``); other
settings scale them by the simulated spectrum's relative values (spekpy, imported lazily):
kerma linearly with mA and as the spectrum's kerma with kV, HVL as the spectrum's HVL.
Only exposures with the sample in the beam count: darks make no X-rays, references see
no sample.  A mosaic point in the overlap of tiles is exposed by each of them.
"""

from __future__ import annotations

import functools

import numpy as np

from .config import DoseConfig

G_HVL_MM_AL = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)
G_THICKNESS_MM = (20.0, 30.0, 40.0, 45.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0)
G_FACTORS = (  # mGy glandular per mGy incident air kerma; rows HVL, columns thickness
    (0.390, 0.274, 0.207, 0.183, 0.164, 0.135, 0.114, 0.098, 0.0859, 0.0763, 0.0687),
    (0.433, 0.309, 0.235, 0.208, 0.187, 0.154, 0.130, 0.112, 0.0981, 0.0873, 0.0783),
    (0.473, 0.342, 0.261, 0.232, 0.209, 0.172, 0.145, 0.126, 0.1106, 0.0986, 0.0887),
    (0.509, 0.374, 0.289, 0.258, 0.232, 0.192, 0.163, 0.140, 0.1233, 0.1096, 0.0988),
    (0.543, 0.406, 0.318, 0.285, 0.258, 0.214, 0.177, 0.154, 0.1357, 0.1207, 0.1088),
    (0.573, 0.437, 0.346, 0.311, 0.287, 0.236, 0.202, 0.175, 0.1543, 0.1375, 0.1240),
    (0.587, 0.466, 0.374, 0.339, 0.310, 0.261, 0.224, 0.195, 0.1723, 0.1540, 0.1385),
)
"""Dance et al. 2000 g-factors at 50 % glandularity (published values, no edits)."""


@functools.lru_cache(maxsize=1)
def _power_laws() -> tuple[np.ndarray, np.ndarray]:
    """Per tabulated thickness: (exponent p, log g at 1 mm Al) of the fit log g = a + p log HVL."""
    log_h = np.log(G_HVL_MM_AL)
    fits = [np.polyfit(log_h, np.log(column), 1) for column in np.array(G_FACTORS).T]
    slopes, intercepts = np.array(fits).T
    return slopes, intercepts


def g_factor(hvl_mm_al: float, thickness_mm: float) -> float:
    """Dance's normalised glandular dose g (mGy/mGy) at 50 % glandularity for a beam of
    first HVL ``hvl_mm_al`` (mm Al) and a breast of compressed thickness ``thickness_mm``."""
    if not (np.isfinite(hvl_mm_al) and hvl_mm_al > 0):
        raise ValueError(f"hvl_mm_al={hvl_mm_al!r}: must be a positive number of mm Al")
    if not (np.isfinite(thickness_mm) and thickness_mm > 0):
        raise ValueError(f"thickness_mm={thickness_mm!r}: must be a positive breast thickness in mm")
    slopes, intercepts = _power_laws()
    log_g = intercepts + slopes * np.log(hvl_mm_al)  # one value per tabulated thickness
    t = np.asarray(G_THICKNESS_MM)
    i = int(np.clip(np.searchsorted(t, thickness_mm) - 1, 0, t.size - 2))
    fraction = (thickness_mm - t[i]) / (t[i + 1] - t[i])
    return float(np.exp(log_g[i] + fraction * (log_g[i + 1] - log_g[i])))


@functools.lru_cache(maxsize=64)
def _relative_beam(kv: float, reference_kv: float) -> tuple[float, float]:
    """(kerma, HVL) of the simulated spectrum at ``kv`` over those at ``reference_kv``: the
    physics engine's default tube (``Source()``, the same filtration as configs/instrument.yaml;
    the output factor cancels in the ratio)."""
    # spekpy takes seconds to import: on first use only
    from simulators.physics.setup import Setup
    from simulators.physics.spectrum import half_value_layer_mm_al, incident_air_kerma

    setup = Setup()
    source, geometry, gratings = setup.source, setup.geometry, setup.gratings

    def beam(at_kv: float) -> tuple[float, float]:
        return (incident_air_kerma(at_kv, source, geometry, gratings),
                half_value_layer_mm_al(at_kv, source, geometry.source_sample_mm))

    (k, h), (k0, h0) = beam(kv), beam(reference_kv)
    return k / k0, h / h0


def beam_quality(dose: DoseConfig, kv: float, ma: float) -> tuple[float, float]:
    """(incident air kerma rate in mGy/s, HVL in mm Al) at the sample at ``kv`` and ``ma``."""
    if not (np.isfinite(kv) and kv > 0):
        raise ValueError(f"kv={kv!r}: must be a positive tube voltage in kV")
    if not (np.isfinite(ma) and ma >= 0):
        raise ValueError(f"ma={ma!r}: must be a tube current >= 0 mA")
    if kv == dose.reference_kv:
        kerma_ratio, hvl_ratio = 1.0, 1.0
    else:
        kerma_ratio, hvl_ratio = _relative_beam(float(kv), float(dose.reference_kv))
    kerma = dose.air_kerma_mgy_per_s * kerma_ratio * ma / dose.reference_ma
    return kerma, dose.hvl_mm_al * hvl_ratio


def dose_rate_mgy_per_s(dose: DoseConfig, kv: float, ma: float, thickness_mm: float | None = None) -> float:
    """Mean glandular dose rate (mGy/s) at ``kv`` (kV), ``ma`` (mA) for a breast of compressed
    thickness ``thickness_mm`` (mm; None: the reference breast, 45 mm in the paper)."""
    thickness = dose.reference_thickness_mm if thickness_mm is None else thickness_mm
    kerma, hvl = beam_quality(dose, kv, ma)
    return kerma * g_factor(hvl, thickness)  # c = 1 at 50 % glandularity (DoseConfig)


def planned_dose_mgy(dose: DoseConfig, kv: float, ma: float, sample_exposure_s: float,
                     thickness_mm: float | None = None) -> float:
    """Mean glandular dose (mGy) of ``sample_exposure_s`` seconds of sample exposure."""
    return dose_rate_mgy_per_s(dose, kv, ma, thickness_mm) * sample_exposure_s
