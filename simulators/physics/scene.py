"""What the detector sees of a phantom at one stage position: the open beam and the sample.

A :class:`Scene` holds, per detector pixel (after region and binning), the stepping curve's
mean ``mean`` and complex first harmonic ``harmonic`` in absorbed photons per mAs, so a
frame at G2 position x is ``mean + Re(harmonic * exp(i*2*pi*x/p2))`` (DESIGN.md:
``I = a0 + a1*cos(2*pi*x/p2 + phi)``, ``phi = arg harmonic``).  Everything is summed over
the spectrum: per energy E a pixel transmits ``T_E = exp(-mu_E)`` and keeps
``D_E = exp(-eps_E)`` of the fringe's harmonic ``h_E``; the detector integrates energy, so
``mean ~ sum_E s_E T_E`` and ``harmonic ~ sum_E s_E T_E D_E h_E`` with the signal weights
``s_E`` of the spectrum (beam hardening of T and V comes out of this on its own).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from .breast_texture import texture_maps
from .darkfield import scattering_per_mm
from .interferometer import (
    autocorrelation_length_um,
    field_of_view_mm,
    fringe_harmonic,
    grating_mean_transmission,
    wavelength_um,
)
from .materials import delta, mu_per_mm
from .phantom import Phantom
from .setup import Setup
from .spectrum import spectrum_at_detector

SLAB_TABLE = 257
"""Slab thicknesses tabulated for the spectral sums of the tissue."""
GLANDULAR_TABLE = 129
"""Glandular fractions (0-1) tabulated for a textured native slab."""
REFERENCE_KEV = 20.0
"""Energy at which TissueSlab.dark_field_per_mm is given."""


@dataclass(frozen=True)
class Scene:
    """Stepping-curve mean and complex harmonic per pixel (absorbed photons per mAs)."""

    mean: np.ndarray
    harmonic: np.ndarray
    labels: np.ndarray
    """Truth: 0, or i+1 where phantom.clusters[i] has calcium in the pixel."""
    adu_per_photon: float
    """ADU per absorbed photon of the open beam's mean energy (gain * keV)."""
    noise_factor: float
    """Variance per photon over the Poisson variance: <E^2>/<E>^2 of the absorbed spectrum
    (energy integration) divided by the screen's Swank factor."""


def pixel_grid(setup: Setup) -> tuple[np.ndarray, np.ndarray]:
    """Detector-plane coordinates (mm) of the unbinned region's pixel centres: (y, x)."""
    det = setup.detector
    row0, col0, rows, cols = det.region or (0, 0, det.rows, det.columns)
    pitch = det.pixel_um / 1000.0
    y = (np.arange(row0, row0 + rows) + 0.5 - det.rows / 2) * pitch
    x = (np.arange(col0, col0 + cols) + 0.5 - det.columns / 2) * pitch
    return y, x


def _blocks(image: np.ndarray, binning: int) -> np.ndarray:
    """A (rows, binning, cols, binning) view of whole ``binning`` x ``binning`` blocks."""
    rows, cols = (s // binning * binning for s in image.shape)
    return image[:rows, :cols].reshape(rows // binning, binning, cols // binning, binning)


def bin_sum(image: np.ndarray, binning: int) -> np.ndarray:
    """Sum ``binning`` x ``binning`` blocks (the region is cropped to whole blocks)."""
    return image if binning == 1 else _blocks(image, binning).sum(axis=(1, 3))


@functools.lru_cache(maxsize=6)
def scene(setup: Setup, phantom: Phantom | None, stage_mm: tuple[float, float], kv: float) -> Scene:
    """The scene of ``phantom`` moved by the stage to ``stage_mm`` (None: the open beam)."""
    geometry, gratings, det = setup.geometry, setup.gratings, setup.detector
    spectrum = spectrum_at_detector(float(kv), setup.source, geometry, det)
    energies = spectrum.energies_kev
    grating_t = (grating_mean_transmission(energies, gratings.g0_gold_um, gratings.duty_cycle)
                 * grating_mean_transmission(energies, gratings.g2_gold_um, gratings.duty_cycle)
                 * np.exp(-mu_per_mm("silicon", energies)
                          * (gratings.g1_substrate_um + gratings.g2_substrate_um) / 1000.0))
    photons = spectrum.photons_per_mm2_mas * spectrum.absorbed_fraction * grating_t
    weight = photons * energies
    weight = weight / weight.sum()
    mean_kev = float((photons * energies).sum() / photons.sum())
    spread = float((photons * energies**2).sum() / photons.sum()) / mean_kev**2
    h = fringe_harmonic(energies, geometry, gratings)

    y_det, x_det = pixel_grid(setup)
    pitch = det.pixel_um / 1000.0
    distance = geometry.source_detector_mm
    cos3 = (distance / np.sqrt(distance**2 + y_det[:, None] ** 2 + x_det[None, :] ** 2)) ** 3
    flux = pitch**2 * photons.sum() * cos3  # absorbed photons per mAs per pixel

    fov_h, fov_w = field_of_view_mm(geometry, gratings)
    inside = (np.abs(y_det)[:, None] <= fov_h / 2) & (np.abs(x_det)[None, :] <= fov_w / 2)
    ifm = setup.interferometer
    radius = np.hypot(y_det[:, None] / (fov_h / 2), x_det[None, :] / (fov_w / 2)) / np.sqrt(2)
    visibility_map = np.clip(1 - ifm.visibility_variation * radius**2, 0, None) * inside
    angle = np.deg2rad(ifm.moire_angle_deg)
    moire = 2 * np.pi * ifm.moire_periods * (
        x_det[None, :] * np.cos(angle) + y_det[:, None] * np.sin(angle)) / fov_w
    fringe = visibility_map * np.exp(1j * moire)

    mean = np.ones_like(flux)
    harmonic = np.full(flux.shape, np.sum(weight * h), dtype=complex)
    labels = np.zeros(flux.shape, dtype=np.int32)
    if phantom is not None:
        magnification = geometry.magnification
        u = x_det / magnification - stage_mm[0]
        v = y_det / magnification - stage_mm[1]
        _add_phantom(phantom, u, v, pitch / magnification, energies, weight, h, setup,
                     mean, harmonic, labels)
    binning = det.binning
    return Scene(
        mean=bin_sum(flux * mean, binning).astype(np.float32),
        harmonic=bin_sum(flux * harmonic * fringe, binning).astype(np.complex64),
        labels=_bin_labels(labels, binning),
        adu_per_photon=det.gain_adu_per_kev * mean_kev,
        noise_factor=spread / det.swank_factor,
    )


def _bin_labels(labels: np.ndarray, binning: int) -> np.ndarray:
    """A binned pixel carries any cluster label inside it (the largest)."""
    return labels if binning == 1 else _blocks(labels, binning).max(axis=(1, 3))


def _window(x: np.ndarray, low: float, high: float, edge: float) -> np.ndarray:
    """1 between ``low`` and ``high`` with erf edges of width ``edge``."""
    return 0.5 * (erf((x - low) / edge) - erf((x - high) / edge))


def _slab_profile(phantom: Phantom, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Slab thickness (mm) under each pixel, with soft edges (and the steps of a wedge)."""
    slab = phantom.slab
    if slab is None:
        return np.zeros((v.size, u.size))
    edge = max(slab.edge_mm, 1e-6)
    py = 0.5 * (1 + erf((slab.height_mm / 2 - np.abs(v)) / edge))
    if slab.steps_mm:
        bounds = np.linspace(-slab.width_mm / 2, slab.width_mm / 2, len(slab.steps_mm) + 1)
        px = sum(step * _window(u, low, high, edge)
                 for step, low, high in zip(slab.steps_mm, bounds[:-1], bounds[1:]))
        return py[:, None] * px[None, :]
    px = 0.5 * (1 + erf((slab.width_mm / 2 - np.abs(u)) / edge))
    return slab.thickness_mm * py[:, None] * px[None, :]


@dataclass(frozen=True)
class _Tissue:
    """The slab's materials per energy: attenuation (1/mm) and delta of its two end
    members (adipose and glandular, or paraffin twice) and its own scattering per mm."""

    mu: tuple[np.ndarray, np.ndarray]
    delta: tuple[np.ndarray, np.ndarray]
    eps_per_mm: np.ndarray
    glandularity: float

    def mix(self, quantity: tuple[np.ndarray, np.ndarray], g) -> np.ndarray:
        """Linear mix by glandular fraction of the thickness ``g`` (broadcasts on E)."""
        g = np.asarray(g, dtype=float)[..., None]
        return quantity[0] + g * (quantity[1] - quantity[0])


def _tissue(slab, energies: np.ndarray) -> _Tissue:
    if slab is None:
        air = mu_per_mm("air", energies), delta("air", energies)
        return _Tissue((air[0], air[0]), (air[1], air[1]), np.zeros_like(energies), 0.5)
    if slab.embedding == "paraffin":
        mu, d = mu_per_mm("paraffin", energies), delta("paraffin", energies)
        members_mu, members_delta = (mu, mu), (d, d)
    else:  # glandularity is the glandular fraction of the thickness (volume mixing)
        members_mu = (mu_per_mm("adipose", energies), mu_per_mm("glandular", energies))
        members_delta = (delta("adipose", energies), delta("glandular", energies))
    return _Tissue(members_mu, members_delta,
                   slab.dark_field_per_mm * (REFERENCE_KEV / energies) ** 2, slab.glandularity)


def _tissue_tables(slab, tissue: _Tissue, weight, h):
    """Spectral sums of plain tissue on a grid of thickness (mm) x glandular fraction:
    (thickness nodes, fraction nodes, mean table, harmonic table).  The thickness nodes
    include every step of a wedge exactly, so uniform regions are exact in thickness."""
    top = slab.max_thickness_mm
    nodes = np.unique(np.concatenate([np.linspace(0, top, SLAB_TABLE), [slab.thickness_mm],
                                      np.asarray(slab.steps_mm, dtype=float)]))
    nodes = nodes[nodes <= top]
    fractions = (np.linspace(0, 1, GLANDULAR_TABLE) if slab.textured and slab.glandular_sd > 0
                 else np.array([slab.glandularity]))
    mu = tissue.mix(tissue.mu, fractions)  # (G, E)
    exponent = nodes[:, None, None] * mu[None, :, :]  # (T, G, E)
    t = np.exp(-exponent)
    d = np.exp(-nodes[:, None, None] * tissue.eps_per_mm[None, None, :])
    return nodes, fractions, t @ weight, (t * d) @ (weight * h)


def _interpolate(nodes, fractions, table, thickness, fraction):
    """Bilinear interpolation of ``table`` (T, G, K) at per-pixel thickness and fraction:
    (..., K)."""
    x = np.clip(thickness, nodes[0], nodes[-1])
    if nodes.size == 1:
        return np.broadcast_to(table[0, 0], x.shape + table.shape[2:]).copy()
    i = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2)
    ft = ((x - nodes[i]) / (nodes[i + 1] - nodes[i]))[..., None]
    if fractions.size == 1:
        return table[i, 0] * (1 - ft) + table[i + 1, 0] * ft
    y = np.clip(fraction, 0, 1) * (fractions.size - 1)
    j = np.minimum(y.astype(int), fractions.size - 2)
    fg = (y - j)[..., None]
    flat = table.reshape(-1, table.shape[2])
    k = i * fractions.size + j
    low = flat[k] * (1 - fg) + flat[k + 1] * fg
    k += fractions.size
    high = flat[k] * (1 - fg) + flat[k + 1] * fg
    return low * (1 - ft) + high * ft


def _add_phantom(phantom, u, v, pixel_mm, energies, weight, h, setup, mean, harmonic, labels):
    """Fill ``mean`` and ``harmonic`` (relative to the open beam) with the phantom's signal.

    Plain tissue comes from a table over thickness x glandular fraction; pixels with
    grains or with fibre/duct scattering are summed over the spectrum exactly.
    """
    geometry, gratings = setup.geometry, setup.gratings
    slab = phantom.slab
    tissue = _tissue(slab, energies)
    mu_medium = tissue.mix(tissue.mu, tissue.glandularity)
    delta_medium = tissue.mix(tissue.delta, tissue.glandularity)
    lam = wavelength_um(energies)
    xi = autocorrelation_length_um(energies, geometry, gratings)

    thickness = _slab_profile(phantom, u, v)
    fraction = np.full(thickness.shape, tissue.glandularity)
    strands = np.zeros(thickness.shape)
    if slab is not None and slab.textured:
        fraction, strands = texture_maps(slab).sample(u, v)
        fraction, strands = fraction.astype(np.float64), strands.astype(np.float64)
    if slab is not None:
        nodes, fractions, mean_table, harmonic_table = _tissue_tables(slab, tissue, weight, h)
        table = np.stack([mean_table, harmonic_table.real, harmonic_table.imag], axis=-1)
        sums = np.broadcast_to(table[0, 0], thickness.shape + (3,)).copy()  # no tissue
        inside = thickness > 0
        sums[inside] = _interpolate(nodes, fractions, table, thickness[inside], fraction[inside])
        mean[:] = sums[..., 0]
        harmonic[:] = sums[..., 1] + 1j * sums[..., 2]

    index, path, grain_of, grains, cluster_of = _rasterise(phantom, u, v, pixel_mm)
    materials = sorted({g.material for g in grains})
    mu_grain = {m: mu_per_mm(m, energies) - mu_medium for m in materials}
    delta_grain = {m: delta(m, energies) - delta_medium for m in materials}
    scattering = np.flatnonzero(strands.ravel() > 0)
    pixels, inverse = np.unique(np.concatenate([index, scattering]), return_inverse=True)
    if pixels.size:
        mu_px = np.zeros((pixels.size, energies.size))
        eps_px = np.zeros((pixels.size, energies.size))
        if index.size:
            mu_g = np.array([mu_grain[g.material] for g in grains])  # (grains, E)
            eps_g = np.array([scattering_per_mm(g.radius_um, delta_grain[g.material], lam, xi)
                              for g in grains])
            np.add.at(mu_px, inverse[:index.size], path[:, None] * mu_g[grain_of])
            np.add.at(eps_px, inverse[:index.size], path[:, None] * eps_g[grain_of])
        slab_px = thickness.ravel()[pixels][:, None]
        mu_px += slab_px * tissue.mix(tissue.mu, fraction.ravel()[pixels])
        eps_px += (slab_px * tissue.eps_per_mm
                   + strands.ravel()[pixels][:, None] * (REFERENCE_KEV / energies) ** 2)
        t = np.exp(-mu_px)
        d = np.exp(-eps_px)
        mean.reshape(-1)[pixels] = t @ weight
        harmonic.reshape(-1)[pixels] = (t * d) @ (weight * h)
    if index.size:
        labels.reshape(-1)[index] = cluster_of[grain_of] + 1

    # refraction: the fringe shifts by d_eff times the gradient of the projected delta
    effective = np.argmax(weight)
    projected = np.zeros(mean.size)
    if index.size:
        np.add.at(projected, index,
                  path * np.array([delta_grain[g.material][effective] for g in grains])[grain_of])
    members = (tissue.delta[0][effective], tissue.delta[1][effective])
    projected = projected.reshape(mean.shape) + thickness * (members[0] + fraction * (members[1] - members[0]))
    d_eff_um = xi[effective] * gratings.g2_period_um / lam[effective]
    gradient = np.gradient(projected, pixel_mm, axis=1)
    harmonic *= np.exp(1j * 2 * np.pi * d_eff_um * gradient / gratings.g2_period_um)


def _rasterise(phantom: Phantom, u: np.ndarray, v: np.ndarray, pixel_mm: float):
    """Pixel-averaged chord length (mm) of every grain through the pixels it touches.

    Returns flat pixel indices, path lengths, the grain of each entry, the grains, and the
    cluster index of each grain.  Pixels are supersampled (5 x 5) for sub-pixel accuracy.
    """
    grains = [g for c in phantom.clusters for g in c.grains]
    cluster_of = np.array([i for i, c in enumerate(phantom.clusters) for _ in c.grains], dtype=np.int32)
    sub = 5
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    du = u[1] - u[0] if u.size > 1 else pixel_mm
    dv = v[1] - v[0] if v.size > 1 else pixel_mm
    index, path, grain_of = [], [], []
    for gi, g in enumerate(grains):
        r = g.radius_um / 1000.0
        cols = np.flatnonzero(np.abs(u - g.x_mm) <= r + abs(du))
        rows = np.flatnonzero(np.abs(v - g.y_mm) <= r + abs(dv))
        if cols.size == 0 or rows.size == 0:
            continue
        su = (u[cols][:, None] + offsets[None, :] * du - g.x_mm).ravel()
        sv = (v[rows][:, None] + offsets[None, :] * dv - g.y_mm).ravel()
        rho2 = sv[:, None] ** 2 + su[None, :] ** 2
        chord = 2 * np.sqrt(np.clip(r * r - rho2, 0, None))
        chord = chord.reshape(rows.size, sub, cols.size, sub).mean(axis=(1, 3))
        hit = chord > 0
        if not hit.any():
            continue
        rr, cc = np.nonzero(hit)
        index.append(rows[rr] * u.size + cols[cc])
        path.append(chord[hit])
        grain_of.append(np.full(rr.size, gi))
    if not index:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0), empty, grains, cluster_of
    return np.concatenate(index), np.concatenate(path), np.concatenate(grain_of), grains, cluster_of
