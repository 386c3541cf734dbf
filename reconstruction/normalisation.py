"""Normalise a cluster's T and V by the surrounding tissue (paper eq. 2).

Scherer et al. 2016, Methods: for a cluster much thinner than the specimen,
``Tc = T/Ts`` and ``Vc = V/Vs`` retrieve the signal of the calcification alone; Ts and Vs
are the medians of T and V over a ring of tissue around the cluster.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def surroundings(labels: np.ndarray, label: int, *, ring_px: int = 6, gap_px: int = 3,
                 hull_px: int = 8) -> np.ndarray:
    """Mask of the tissue ring around cluster ``label``: outside its hull, no other cluster."""
    cluster = labels == label
    hull = ndimage.binary_closing(ndimage.binary_dilation(cluster, iterations=hull_px),
                                  iterations=hull_px) if hull_px else cluster
    inner = ndimage.binary_dilation(hull, iterations=gap_px) if gap_px else hull
    outer = ndimage.binary_dilation(inner, iterations=ring_px)
    others = ndimage.binary_dilation((labels > 0) & ~cluster, iterations=gap_px + 1)
    return outer & ~inner & ~others


def normalise_to_surroundings(transmission, dark_field, labels, *, ring_px: int = 6,
                              gap_px: int = 3) -> dict[int, tuple[np.ndarray, np.ndarray, float, float]]:
    """Per cluster label: (Tc, Vc) of its pixels and the ring medians (Ts, Vs)."""
    transmission = np.asarray(transmission, dtype=np.float64)
    dark_field = np.asarray(dark_field, dtype=np.float64)
    labels = np.asarray(labels)
    if not transmission.shape == dark_field.shape == labels.shape:
        raise ValueError(
            f"transmission {transmission.shape}, dark_field {dark_field.shape} and labels "
            f"{labels.shape} must have the same shape"
        )
    result = {}
    for label in np.unique(labels[labels > 0]):
        ring = surroundings(labels, label, ring_px=ring_px, gap_px=gap_px)
        ring &= np.isfinite(transmission) & np.isfinite(dark_field)
        if ring.sum() < 3:
            raise ValueError(f"cluster {label} has no surrounding tissue to normalise by")
        ts, vs = float(np.median(transmission[ring])), float(np.median(dark_field[ring]))
        pixels = labels == label
        result[int(label)] = (transmission[pixels] / ts, dark_field[pixels] / vs, ts, vs)
    return result
