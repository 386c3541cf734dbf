"""The numba kernel of :mod:`reconstruction.segmentation_kernels` (imported on first use).

Module-level functions, so numba's cache finds them again in the next process.
"""

import numba
import numpy as np

serial = numba.njit(cache=True, nogil=True)
inline = numba.njit(cache=True, inline="always")


@inline
def row_distance(flags, out, cap, target):  # pragma: no cover - compiled
    """out[x]: distance along the row to the nearest x' with flags[x'] == target, at most cap."""
    d = cap
    for x in range(flags.size):
        d = 0 if flags[x] == target else min(d + 1, cap)
        out[x] = d
    d = cap
    for x in range(flags.size - 1, -1, -1):
        d = 0 if flags[x] == target else min(d + 1, cap)
        out[x] = min(out[x], d)


@inline
def any_within(near, y, widths, row):  # pragma: no cover - compiled
    """row[x]: a pixel of near's kind within the disc's row widths[|dy|] of (y, x)."""
    ny = near.shape[0]
    reach = widths.size - 1
    for dy in range(max(-reach, -y), min(reach, ny - 1 - y) + 1):
        width = widths[abs(dy)]
        other = near[y + dy]
        for x in range(row.size):
            row[x] = row[x] or other[x] <= width


@serial  # numba 0.68's parfors got these row loops wrong (tested): one thread
def close_disc_kernel(mask, widths):  # pragma: no cover - compiled
    ny, nx = mask.shape
    cap = widths.size  # > every width: "none within reach"
    near = np.empty((ny, nx), np.uint8)  # row distance to a mask pixel, then to a non-dilated one
    for y in range(ny):
        row_distance(mask[y], near[y], cap, True)
    dilated = np.zeros((ny, nx), np.bool_)
    for y in range(ny):
        any_within(near, y, widths, dilated[y])
    for y in range(ny):
        row_distance(dilated[y], near[y], cap, False)  # the image's border is not outside
    closed = np.zeros((ny, nx), np.bool_)
    for y in range(ny):
        any_within(near, y, widths, closed[y])  # eroded: a non-dilated pixel in the disc
        for x in range(nx):
            closed[y, x] = mask[y, x] or (dilated[y, x] and not closed[y, x])
    return closed

