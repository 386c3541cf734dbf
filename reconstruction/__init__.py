"""Talbot-Lau dark-field reconstruction: pure numpy/scipy, usable without bluesky.

Retrieval of transmission, dark-field and differential phase from phase-stepping scans,
segmentation of calcification clusters, tissue normalisation (eq. 2) and the mu/eps
microtexture classification of Scherer et al., Sci Rep 6:36991 (2016), Table 1.
See docs/reconstruction.md.
"""

from .clusters import ClusterAnalysis, analyse_clusters
from .corrections import correct_drift, debias_amplitude, interpolate_reference
from .microct import Particle, particles, surface_distribution, table1_descriptor
from .microtexture import SUSPICIOUS_RATIO, TABLE_1, TEXTURES, Microtexture, classify_microtexture
from .noise import rice_amplitude, signal_floor
from .normalisation import normalise_to_surroundings, surrounding_tissue
from .retrieval import Retrieval, retrieve
from .roc import RocCurve, confusion_at, roc_curve
from .stitching import Mosaic, Tile, place_tiles, refine_offsets, stitch
from .segmentation import calcified_mask, label_clusters, segment_clusters
from .stepping import SteppingFit, fit_stepping, wrap_phase
from .tissue_correction import (TissueCorrection, correct_clusters, correction_points,
                                fit_tissue_correction)

__all__ = [
    "ClusterAnalysis", "Microtexture", "Retrieval", "SteppingFit", "SUSPICIOUS_RATIO",
    "TABLE_1", "TEXTURES", "analyse_clusters", "calcified_mask", "classify_microtexture",
    "fit_stepping", "label_clusters", "normalise_to_surroundings", "retrieve", "segment_clusters",
    "surrounding_tissue", "wrap_phase",
    "correct_drift", "debias_amplitude", "interpolate_reference", "rice_amplitude", "signal_floor",
    "RocCurve", "confusion_at", "roc_curve",
    "Particle", "particles", "surface_distribution", "table1_descriptor",
    "Mosaic", "Tile", "place_tiles", "refine_offsets", "stitch",
    "TissueCorrection", "correct_clusters", "correction_points", "fit_tissue_correction",
]
