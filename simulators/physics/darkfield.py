"""Dark-field of an assembly of random spheres (Lynch et al., Appl. Opt. 50:4310, 2011;
Strobl, Sci. Rep. 4:7243, 2014), as used for microcalcifications by Scherer et al. 2016.

Per unit path length through the grains' material (a volume fraction f over a thickness t
gives a material path f*t), the scattering power is

    eps(R) = (6*pi^2 / lambda^2) * ddelta^2 * R * (1 - G(xi/R))

with ddelta the refractive decrement contrast against the surrounding medium, xi the
interferometer's autocorrelation length and G the projected autocorrelation of a sphere:
G(z) = sqrt(1-z^2/4)*(1+z^2/8) + (z^2/2)*(1-z^2/16)*ln(z/(2+sqrt(4-z^2))) for 0 < z < 2,
G = 0 for z >= 2.  Small grains (R << xi) scatter in proportion to R, large ones
(R >> xi) as xi^2/R * ln(4R/xi): eps peaks near R ~ xi and falls for coarse grains.
"""

from __future__ import annotations

import numpy as np


def sphere_autocorrelation(z) -> np.ndarray:
    """G(z): the projected autocorrelation of a sphere at correlation length z = xi/R."""
    z = np.asarray(z, dtype=float)
    inside = (z > 0) & (z < 2)
    zi = np.where(inside, z, 1.0)
    root = np.sqrt(1 - zi**2 / 4)
    g = root * (1 + zi**2 / 8) + (zi**2 / 2) * (1 - zi**2 / 16) * np.log(zi / (2 + np.sqrt(4 - zi**2)))
    return np.where(inside, g, np.where(z <= 0, 1.0, 0.0))


def scattering_per_mm(radius_um, ddelta, wavelength_um, xi_um) -> np.ndarray:
    """Scattering power eps per mm of grain-material path (1/mm); arguments broadcast."""
    radius_um = np.asarray(radius_um, dtype=float)
    per_um = (6 * np.pi**2 / np.asarray(wavelength_um) ** 2) * np.asarray(ddelta) ** 2 * radius_um * (
        1 - sphere_autocorrelation(np.asarray(xi_um) / radius_um)
    )
    return per_um * 1000.0
