"""Print the R-against-tissue table of docs/physics.md ("The thickness question").

Run from the repository root:
python docs/thickness_table.py [--wave-optics] [--achromatic] [--uniform] [--seed N]

For each tissue (``specimen``: breast 10-60 mm, native, 50 % glandular and textured; the
10 mm paraffin block) the SAME 12 clusters (same seed) are put in the beam; the noise-free
signals (``sample_signals``) go through ``reconstruction.analyse_clusters`` with the truth
labels, and the table gives the mean mu/eps ratio R per class and its ratio to the 10 mm
paraffin block (Scherer et al. 2016, Fig. 1F: 0.31 +- 0.02 in 45 mm breast against
0.33 +- 0.01 in paraffin).  Further tables: ``--wave-optics`` with the wave-optics fringe
harmonic (``simulators.physics.wave_optics.wave_harmonic``) in place of the model's;
``--achromatic`` with the model's |harmonic| (a diagnostic: no sign change at 20 keV);
``--uniform`` with untextured slabs (the chromatic effect without the tissue texture).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

import numpy as np

from reconstruction import analyse_clusters
from simulators.physics import (
    TEXTURES,
    Detector,
    Interferometer,
    Setup,
    TubeState,
    sample_signals,
    specimen,
    truth_labels,
)
from simulators.physics import scene as scene_module
from simulators.physics.interferometer import fringe_harmonic
from simulators.physics.wave_optics import wave_harmonic

TISSUES = (("paraffin 10 mm", "paraffin10"), ("breast 10 mm", "breast10"), ("breast 20 mm", "breast20"),
           ("breast 30 mm", "breast30"), ("breast 45 mm", "breast45"), ("breast 60 mm", "breast60"))
"""(row name, ``specimen`` name); the first row is the reference of the ratios."""
CLUSTERS = 12
"""Clusters per specimen: 3 of each class, on a 9 mm grid inside REGION."""
REGION = (608, 720, 320, 480)
"""Detector region (first row, first column, rows, columns): 3 clusters per class."""
STAGE = (0.0, 0.0)
SETUP = Setup(detector=Detector(region=REGION),
              interferometer=Interferometer(visibility_variation=0.0, moire_periods=0.0))


@contextlib.contextmanager
def fringe_model(harmonic):
    """Within the block the engine's scenes use ``harmonic(energies, geometry, gratings)``
    (e.g. ``wave_harmonic``) as the fringe harmonic per energy; the scene cache is cleared
    on the way in and out."""
    original = scene_module.fringe_harmonic
    scene_module.scene.cache_clear()
    scene_module.fringe_harmonic = harmonic
    try:
        yield
    finally:
        scene_module.fringe_harmonic = original
        scene_module.scene.cache_clear()


def ratios_per_class(name: str, seed: int, setup: Setup = SETUP, *,
                     uniform: bool = False) -> dict[str, list[float]]:
    """Noise-free R (mu/eps) of each cluster of ``specimen(name)``, by true class;
    ``uniform``: the slab without glandular texture, fibres and ducts."""
    phantom = specimen(name, clusters=CLUSTERS, seed=seed)
    if uniform:
        slab = dataclasses.replace(phantom.slab, glandular_sd=0.0, fibres_per_cm2=0.0, ducts_per_cm2=0.0)
        phantom = dataclasses.replace(phantom, slab=slab)
    signals = sample_signals(setup, phantom, STAGE, TubeState())
    labels = truth_labels(setup, phantom, STAGE)
    result = {texture: [] for texture in TEXTURES}
    for cluster in analyse_clusters(signals.transmission, signals.dark_field, labels):
        result[phantom.clusters[cluster.label - 1].texture].append(cluster.ratio)
    return result


def thickness_table(seed: int = 1, setup: Setup = SETUP, *,
                    uniform: bool = False) -> dict[str, dict[str, float]]:
    """{tissue row: {texture: mean R}} over TISSUES."""
    table = {}
    for row, name in TISSUES:
        per_class = ratios_per_class(name, seed, setup, uniform=uniform)
        table[row] = {t: float(np.mean(r)) if r else float("nan") for t, r in per_class.items()}
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    """The table as markdown: R per class and, in brackets, its ratio to the first row."""
    reference = next(iter(table.values()))
    lines = ["| tissue | " + " | ".join(TEXTURES) + " |", "| --- |" + " --- |" * len(TEXTURES)]
    for name, row in table.items():
        cells = [f"{row[t]:.3f} ({row[t] / reference[t]:.2f})" for t in TEXTURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def achromatic_harmonic(energies_kev, geometry, gratings):
    """Diagnostic: the model's harmonic without its sign, as if every energy formed fringes
    of the same sign (what the table looks like without the chromatic sign change)."""
    return np.abs(fringe_harmonic(energies_kev, geometry, gratings))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wave-optics", action="store_true",
                        help="also the table with the wave-optics fringe harmonic")
    parser.add_argument("--achromatic", action="store_true",
                        help="also the table with the model's |harmonic| (no sign change)")
    parser.add_argument("--uniform", action="store_true",
                        help="also the table with untextured slabs")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (the same clusters in every tissue)")
    args = parser.parse_args(argv)
    tables = [("fringe model (interferometer.fringe_harmonic)", fringe_harmonic, False)]
    if args.wave_optics:
        tables.append(("wave optics (wave_optics.wave_harmonic)", wave_harmonic, False))
    if args.achromatic:
        tables.append(("diagnostic, no sign change (|fringe_harmonic|)", achromatic_harmonic, False))
    if args.uniform:
        tables.append(("fringe model, untextured slabs", fringe_harmonic, True))
    start = time.perf_counter()
    print(f"filtration {SETUP.source.filtration}; R (ratio to {TISSUES[0][0]}), "
          f"{CLUSTERS} clusters, seed {args.seed}")
    for title, harmonic, uniform in tables:
        print(f"\n{title}:")
        with fringe_model(harmonic):
            print(markdown(thickness_table(args.seed, uniform=uniform)))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SETUP", "TISSUES", "achromatic_harmonic", "fringe_model", "markdown", "ratios_per_class", "thickness_table"]
