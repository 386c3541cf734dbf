"""An independent wave-optics check of the fringe model: propagate, sum sources, step G2.

Per energy (keV): one period of the real G1 is sampled, a binary silicon phase grating whose
bar height gives ``g1_phase_shift_pi`` * pi at the design energy from xraydb's delta of Si
(so the phase follows delta(E), not an assumed 1/E law) and which absorbs by xraydb's mu of
Si.  The complex field is propagated by the angular-spectrum method (FFT, transfer function
exp(i 2 pi z (sqrt(1/lambda^2 - f^2) - 1/lambda))) over the plane-wave-equivalent distance
z = l d/(l+d) and magnified by (l+d)/l onto G2 (Fresnel scaling theorem for a point source
at G0, distance l = G0-G1, d = G1-G2).  Intensities from point sources across one period of
G0 (open slits and gold bars that transmit a little) are summed incoherently, each shifted
by s d/l; a sampled G2 (gold bars, xraydb) is stepped over the summed pattern, and the
stepping curve's mean and first harmonic (DFT of equally spaced steps) give the visibility
and phase.  G0's period is taken Lau-matched (projected by d/l onto the fringe period) and
G2's period equal to the fringe period, as in the instrument after alignment.  G1's bars
(a fraction ``duty_cycle`` of its period) carry the physical phase -k delta h; the fringe
model puts +phi there, which at duty cycle 0.5 only shifts the fringe by half a period
(docs/physics.md, "The thickness question").

Nothing here is shared with ``interferometer.py`` beyond the material constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import delta, mu_per_mm
from .setup import Geometry, Gratings

HC_KEV_UM = 1.23984e-3
"""h c in keV um: lambda (um) = HC_KEV_UM / E (keV)."""
SAMPLES = 2304
"""Samples over one fringe period (9 x 256: every G2 step is a whole number of samples)."""
SOURCE_POINTS = 256
"""Incoherent point sources across one (projected) period of G0."""


@dataclass(frozen=True)
class WaveFringe:
    """Stepping-curve mean and complex first harmonic per energy (keV).

    ``mean``: mean intensity behind G0, G1 and G2 relative to the beam without gratings
    (G1's bars absorb, G0 and G2 transmit their mean); ``harmonic``: first harmonic over
    mean, so that the stepping curve is ``mean * (1 + Re(harmonic * exp(i 2 pi x / p2)))``
    for a G2 displacement x (um).  ``|harmonic|`` is the visibility.
    """

    energies_kev: np.ndarray
    mean: np.ndarray
    harmonic: np.ndarray

    @property
    def visibility(self) -> np.ndarray:
        return np.abs(self.harmonic)


def g1_height_um(gratings: Gratings) -> float:
    """Silicon bar height (um) giving a phase shift of ``g1_phase_shift_pi`` * pi at the
    design energy: h = shift * lambda / (2 delta_Si), about 17 um for pi/2 at 27 keV."""
    if not gratings.g1_phase_shift_pi > 0:
        raise ValueError(f"g1_phase_shift_pi must be > 0 (units of pi), got {gratings.g1_phase_shift_pi}")
    energy = gratings.design_energy_kev
    delta_si = float(delta("silicon", np.array([energy]))[0])
    return gratings.g1_phase_shift_pi * (HC_KEV_UM / energy) / (2 * delta_si)


def g1_transmission(energy_kev: float, gratings: Gratings, samples: int = SAMPLES, *,
                    ideal: bool = False) -> np.ndarray:
    """Complex amplitude transmission of one G1 period, bar centred at x = 0.

    In the bars exp(-i k delta h - mu h / 2) (n = 1 - delta + i beta, field exp(i k z),
    k beta = mu / 2), 1 in the gaps.  ``ideal``: the fringe model's assumptions instead
    (no absorption, phase exactly shift * pi * E_design / E).
    """
    lam_um = HC_KEV_UM / energy_kev
    energies = np.array([energy_kev])
    h_um = g1_height_um(gratings)
    if ideal:
        phase = np.pi * gratings.g1_phase_shift_pi * gratings.design_energy_kev / energy_kev
        absorption = 0.0
    else:
        phase = 2 * np.pi / lam_um * float(delta("silicon", energies)[0]) * h_um
        absorption = float(mu_per_mm("silicon", energies)[0]) * h_um / 1000.0 / 2
    return _binary_profile(gratings.duty_cycle, np.exp(-1j * phase - absorption), 1.0 + 0j, samples)


def propagate(field: np.ndarray, period_um: float, distance_um: float, energy_kev: float) -> np.ndarray:
    """Angular-spectrum propagation of one period of a periodic field over ``distance_um``.

    The transfer function's phase 2 pi z (sqrt(1/lambda^2 - f^2) - 1/lambda) is written as
    -2 pi z lambda f^2 / (1 + sqrt(1 - lambda^2 f^2)) to keep its precision (z/lambda ~ 1e10).
    """
    lam_um = HC_KEV_UM / energy_kev
    f = np.fft.fftfreq(field.size, d=period_um / field.size)  # 1/um
    s = (lam_um * f) ** 2
    phase = -2 * np.pi * distance_um * lam_um * f**2 / (1 + np.sqrt(1 - s))
    return np.fft.ifft(np.fft.fft(field) * np.exp(1j * phase))


def _binary_profile(fraction: float, inside, outside, samples: int) -> np.ndarray:
    """One period of a binary grating sampled at x = i/samples - 1/2: ``inside`` where
    |x| < fraction/2, ``outside`` beyond, their mean on an edge sample (symmetric about 0)."""
    x = np.arange(samples) / samples - 0.5
    edge = np.isclose(np.abs(x), fraction / 2, rtol=0, atol=1e-12)
    profile = np.where(np.abs(x) < fraction / 2, inside, outside)
    return np.where(edge, (inside + outside) / 2, profile)


def stepping_curve(energy_kev: float, geometry: Geometry, gratings: Gratings, *, steps: int = 9,
                   samples: int = SAMPLES, source_points: int = SOURCE_POINTS,
                   ideal_g1: bool = False) -> np.ndarray:
    """Detected intensity at ``steps`` equally spaced G2 positions over one period,
    relative to the beam without gratings (one energy, keV).  ``ideal_g1``: see
    :func:`g1_transmission`."""
    if samples % steps or samples % source_points:
        raise ValueError(f"samples ({samples}) must be a multiple of steps ({steps}) and "
                         f"source_points ({source_points})")
    l_um, d_um = geometry.g0_g1_mm * 1e3, geometry.g1_g2_mm * 1e3
    z_um = l_um * d_um / (l_um + d_um)
    # plane-wave pattern at z; on G2 it is this pattern magnified by (l+d)/l: the sample
    # index is the fraction of the fringe period either way
    field = propagate(g1_transmission(energy_kev, gratings, samples, ideal=ideal_g1),
                      gratings.g1_period_um, z_um, energy_kev)
    pattern = np.abs(field) ** 2
    energies = np.array([energy_kev])
    g0_bars = float(np.exp(-mu_per_mm("gold", energies)[0] * gratings.g0_gold_um / 1000.0))
    g2_bars = float(np.exp(-mu_per_mm("gold", energies)[0] * gratings.g2_gold_um / 1000.0))
    # incoherent sum over G0 point sources s: the pattern from s is shifted by -s d/l on G2
    source = _binary_profile(gratings.duty_cycle, 1.0, g0_bars, samples)
    stride = samples // source_points
    summed = np.zeros(samples)
    for j in range(samples // 2 % stride, samples, stride):  # symmetric about the slit centre
        shift = j - samples // 2  # source position in samples of the projected G0 period
        summed += source[j] * np.roll(pattern, -shift)
    summed *= float(source.mean()) / float(source[samples // 2 % stride::stride].sum())
    analyser = _binary_profile(gratings.duty_cycle, 1.0, g2_bars, samples)
    stride = samples // steps
    return np.array([np.mean(summed * np.roll(analyser, k * stride)) for k in range(steps)])


def wave_fringe(energies_kev, geometry: Geometry, gratings: Gratings, *, steps: int = 9,
                samples: int = SAMPLES, source_points: int = SOURCE_POINTS,
                ideal_g1: bool = False) -> WaveFringe:
    """Mean and first harmonic (fitted to the stepping curve) per energy (keV)."""
    energies = np.atleast_1d(np.asarray(energies_kev, dtype=float))
    if energies.size == 0 or not np.all(np.isfinite(energies)) or np.any(energies <= 0):
        raise ValueError(f"energies_kev must be positive finite keV, got {energies_kev!r}")
    if steps < 3:
        raise ValueError(f"steps must be at least 3 to fit a first harmonic, got {steps}")
    phases = np.exp(-2j * np.pi * np.arange(steps) / steps)
    means, harmonics = [], []
    for energy in energies:
        curve = stepping_curve(float(energy), geometry, gratings, steps=steps, samples=samples,
                               source_points=source_points, ideal_g1=ideal_g1)
        mean = curve.mean()
        means.append(mean)
        harmonics.append(2 * np.sum(curve * phases) / steps / mean)
    return WaveFringe(energies, np.array(means), np.array(harmonics))


def wave_harmonic(energies_kev, geometry: Geometry, gratings: Gratings) -> np.ndarray:
    """The complex first harmonic over the mean per energy: a drop-in for
    ``interferometer.fringe_harmonic`` with the wave-optics calculation."""
    return wave_fringe(energies_kev, geometry, gratings).harmonic
