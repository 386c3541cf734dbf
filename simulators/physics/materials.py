"""Material constants from xraydb: linear attenuation (1/mm) and refractive decrement delta.

Compositions, not attenuation tables: tissues by elemental mass fractions (Hammerstein et
al., Radiology 130:485, 1979, as used in mammography dosimetry), minerals by formula.
Calcifications: hydroxyapatite (type II), calcium oxalate mono- and dihydrate (type I).
"""

from __future__ import annotations

import functools

import numpy as np
import xraydb

_MASS_FRACTIONS = {  # percent by mass
    "adipose": ({"H": 11.2, "C": 61.9, "N": 1.7, "O": 25.1, "P": 0.025, "S": 0.025}, 0.93),
    "glandular": ({"H": 10.2, "C": 18.4, "N": 3.2, "O": 67.7, "P": 0.125, "S": 0.125, "K": 0.125,
                   "Ca": 0.125}, 1.04),
}
_FORMULAS = {  # formula, density g/cm3
    "hydroxyapatite": ("Ca5P3O13H", 3.16),
    "calcium_oxalate_monohydrate": ("CaC2O5H2", 2.23),
    "calcium_oxalate_dihydrate": ("CaC2O6H4", 1.94),
    "paraffin": ("C25H52", 0.90),
    "water": ("H2O", 1.00),
    "air": ("N1.562O0.42C0.0003Ar0.0093", 0.001205),
    "gold": ("Au", 19.32),
    "silicon": ("Si", 2.33),
    "gadolinium_oxysulfide": ("Gd2O2S", 7.32),
}
MATERIALS = tuple(_FORMULAS) + tuple(_MASS_FRACTIONS) + ("breast",)


def _formula_from_mass_fractions(fractions: dict[str, float]) -> str:
    """A formula with atom counts proportional to mass fraction / atomic mass."""
    return "".join(f"{el}{w / xraydb.atomic_mass(el):.6f}" for el, w in fractions.items())


@functools.lru_cache(maxsize=None)
def formula_and_density(material: str, glandularity: float = 0.5) -> tuple[str, float]:
    """xraydb formula and density (g/cm3) of a named material ('breast' mixes by glandularity)."""
    if material in _FORMULAS:
        return _FORMULAS[material]
    if material in _MASS_FRACTIONS:
        fractions, density = _MASS_FRACTIONS[material]
        return _formula_from_mass_fractions(fractions), density
    if material == "breast":
        (fa, rho_a), (fg, rho_g) = _MASS_FRACTIONS["adipose"], _MASS_FRACTIONS["glandular"]
        mix = {el: (1 - glandularity) * fa.get(el, 0) + glandularity * fg.get(el, 0)
               for el in set(fa) | set(fg)}
        return _formula_from_mass_fractions(mix), (1 - glandularity) * rho_a + glandularity * rho_g
    raise ValueError(f"unknown material {material!r} (known: {', '.join(MATERIALS)})")


def mu_per_mm(material: str, energies_kev: np.ndarray, glandularity: float = 0.5) -> np.ndarray:
    """Linear attenuation coefficient (1/mm) at the given energies (keV)."""
    formula, density = formula_and_density(material, glandularity)
    return xraydb.material_mu(formula, np.asarray(energies_kev) * 1e3, density=density) / 10.0


def delta(material: str, energies_kev: np.ndarray, glandularity: float = 0.5) -> np.ndarray:
    """Refractive index decrement delta at the given energies (keV)."""
    formula, density = formula_and_density(material, glandularity)
    return np.asarray(xraydb.xray_delta_beta(formula, density, np.asarray(energies_kev) * 1e3)[0])
