"""The numba kernels of :mod:`reconstruction.segmentation_kernels` (imported on first use).

Module-level functions, so numba's cache finds them again in the next process.
"""

import numba
import numpy as np

serial = numba.njit(cache=True, nogil=True)
inline = numba.njit(cache=True, inline="always")


@inline
def row_distance(flags, out, cap, target):  # pragma: no cover - compiled
    """out[x]: distance along the row to the nearest x' with flags[x'] == target, at most cap.

    Few True flags (a sparse mask; a dilated row's runs): only around them; else two passes."""
    n = flags.size
    marked = 0
    for x in range(n):
        marked += flags[x]
    if target and marked * cap <= n:  # cap, lowered within cap of each target
        for x in range(n):
            out[x] = cap
        for x in range(n):
            if flags[x]:
                for dx in range(max(-x, 1 - cap), min(n - x, cap)):
                    out[x + dx] = min(out[x + dx], abs(dx))
        return
    if not target and 4 * marked <= n:  # 0 off the runs of True; in a run, to its open ends
        x = 0
        while x < n:
            if not flags[x]:
                out[x] = 0
                x += 1
                continue
            start = x
            while x < n and flags[x]:
                x += 1
            for i in range(start, x):  # the image's border is no end
                d = cap
                if start > 0:
                    d = min(d, i - start + 1)
                if x < n:
                    d = min(d, x - i)
                out[i] = d
        return
    d = cap
    for x in range(flags.size):
        d = 0 if flags[x] == target else min(d + 1, cap)
        out[x] = d
    d = cap
    for x in range(flags.size - 1, -1, -1):
        d = 0 if flags[x] == target else min(d + 1, cap)
        out[x] = min(out[x], d)


@inline
def any_within(near, y, widths, row, rows):  # pragma: no cover - compiled
    """row[x]: a pixel of near's kind within the disc's row widths[|dy|] of (y, x), looking
    at the rows flagged in ``rows`` only (the others have none)."""
    ny = near.shape[0]
    reach = widths.size - 1
    for dy in range(max(-reach, -y), min(reach, ny - 1 - y) + 1):
        if not rows[y + dy]:
            continue
        width = widths[abs(dy)]
        other = near[y + dy]
        for x in range(row.size):
            row[x] = row[x] or other[x] <= width


@inline
def flagged_within(count, y, reach):  # pragma: no cover - compiled
    """Whether a flagged row lies within reach of row y (count[i]: flagged rows before i)."""
    ny = count.size - 1
    return count[min(y + reach, ny - 1) + 1] - count[max(y - reach, 0)] > 0


@serial  # numba 0.68's parfors got these row loops wrong (tested): one thread
def close_disc_kernel(mask, widths):  # pragma: no cover - compiled
    """Rows farther than the radius from every mask (dilated) pixel are skipped: a sparse
    mask costs little more than reading it."""
    ny, nx = mask.shape
    cap = widths.size  # > every width: "none within reach"
    reach = cap - 1
    occupied = np.zeros(ny, np.bool_)  # rows with a mask pixel
    count = np.zeros(ny + 1, np.int64)
    for y in range(ny):
        occupied[y] = np.any(mask[y])
        count[y + 1] = count[y] + occupied[y]
    near = np.empty((ny, nx), np.uint8)  # row distance to a mask pixel, then to a non-dilated one
    for y in range(ny):
        if occupied[y]:
            row_distance(mask[y], near[y], cap, True)
    dilated = np.zeros((ny, nx), np.bool_)
    spread = np.zeros(ny, np.bool_)  # rows with a dilated pixel
    spread_count = np.zeros(ny + 1, np.int64)
    for y in range(ny):
        if flagged_within(count, y, reach):
            any_within(near, y, widths, dilated[y], occupied)
            spread[y] = np.any(dilated[y])
        spread_count[y + 1] = spread_count[y] + spread[y]
    for y in range(ny):
        if flagged_within(spread_count, y, reach):  # read by the erosion of a dilated row
            row_distance(dilated[y], near[y], cap, False)  # the image's border is not outside
    everywhere = np.ones(ny, np.bool_)
    closed = np.zeros((ny, nx), np.bool_)  # rows without a dilated pixel have no mask pixel
    for y in range(ny):
        if spread[y]:
            any_within(near, y, widths, closed[y], everywhere)  # eroded: a non-dilated pixel in the disc
            for x in range(nx):
                closed[y, x] = mask[y, x] or (dilated[y, x] and not closed[y, x])
    return closed


@inline
def lesser(a, b):  # pragma: no cover - compiled
    return a if a < b else b  # noqa: FURB136 (a select: vectorises, as min() need not)


@inline
def greater(a, b):  # pragma: no cover - compiled
    return a if a > b else b  # noqa: FURB136 (a select, as above)


@inline
def extreme(a, b, take_max):  # pragma: no cover - compiled
    return greater(a, b) if take_max else lesser(a, b)


@inline
def filter_row(row, out, before, after, take_max, a, b):  # pragma: no cover - compiled
    """out[x]: min (max) of row over [x - before, x + after], clipped to the row: extremes
    over 2, 4, 8 ... s <= window pixels by doubling (each pass one vectorised loop), then
    of two overlapping spans of s.  a, b: scratch of len(row) + window - 1."""
    n = row.size
    k = before + after + 1
    size = n + k - 1
    identity = -np.inf if take_max else np.inf
    for i in range(size):  # a[i]: padded pixel i, i.e. row[i - before] or identity
        a[i] = identity
    inner = a[before:]
    for x in range(n):
        inner[x] = row[x]
    s = 1  # (offsets as views: a non-negative index lets the loops vectorise)
    while 2 * s <= k:  # a[i]: extreme of padded pixels i .. i + 2s - 1
        later = a[s:]
        if take_max:  # (the branch outside the loop, too)
            for i in range(size - s):
                b[i] = greater(a[i], later[i])
        else:
            for i in range(size - s):
                b[i] = lesser(a[i], later[i])
        a, b = b, a
        s *= 2
    later = a[k - s:]  # padded x .. x + k - 1 = [x, x + s) and [x + k - s, x + k), s > k / 2
    if take_max:
        for x in range(n):
            out[x] = greater(a[x], later[x])
    else:
        for x in range(n):
            out[x] = lesser(a[x], later[x])


@serial
def extreme_filter_kernel(image, out, before, after, take_max):  # pragma: no cover - compiled
    """out: min (max) of ``image`` over the square [y - before, y + after] x [x - before,
    x + after], clipped to the image (scipy.ndimage's mode "nearest").  The columns by van
    Herk / Gil-Werman (within blocks of the window's height, the suffix extremes h of one
    block and the running prefix g of the next, vectorised along the rows), then each row
    as it comes (:func:`filter_row`)."""
    ny, nx = image.shape
    k = before + after + 1
    identity = -np.inf if take_max else np.inf
    h = np.empty((k, nx), image.dtype)
    g = np.empty(nx, image.dtype)
    column = np.empty(nx, image.dtype)
    a, b = np.empty(nx + k - 1, image.dtype), np.empty(nx + k - 1, image.dtype)
    for start in range(0, ny, k):  # outputs start + t take padded rows start + t .. start + t + k - 1
        for t in range(k - 1, -1, -1):  # h[t]: padded rows start + t .. start + k - 1
            j = start + t - before  # padded row -> image row
            ht = h[t]
            if t == k - 1:
                for x in range(nx):
                    ht[x] = identity
            else:
                for x in range(nx):
                    ht[x] = h[t + 1, x]
            if 0 <= j < ny:
                src = image[j]
                for x in range(nx):
                    ht[x] = extreme(ht[x], src[x], take_max)
        for x in range(nx):  # g: padded rows start + k .. start + k + t - 1
            g[x] = identity
        for t in range(min(k, ny - start)):
            ht = h[t]
            for x in range(nx):
                column[x] = extreme(ht[x], g[x], take_max)
            filter_row(column, out[start + t], before, after, take_max, a, b)
            j = start + k + t - before
            if j < ny:
                src = image[j]
                for x in range(nx):
                    g[x] = extreme(g[x], src[x], take_max)


@serial
def median3x3_kernel(image, out):  # pragma: no cover - compiled
    """3 x 3 median, edges nearest: each column's three values sorted (low, middle, high),
    then the median of (max of the lows, median of the middles, min of the highs)."""
    ny, nx = image.shape
    low = np.empty(nx + 2, image.dtype)
    middle = np.empty(nx + 2, image.dtype)
    high = np.empty(nx + 2, image.dtype)
    for y in range(ny):
        up, row, down = image[max(y - 1, 0)], image[y], image[min(y + 1, ny - 1)]
        for x in range(nx):
            a, b, c = up[x], row[x], down[x]
            lo, hi = lesser(a, b), greater(a, b)
            low[x + 1] = lesser(lo, c)
            middle[x + 1] = greater(lo, lesser(hi, c))
            high[x + 1] = greater(hi, c)
        low[0], middle[0], high[0] = low[1], middle[1], high[1]
        low[nx + 1], middle[nx + 1], high[nx + 1] = low[nx], middle[nx], high[nx]
        target = out[y]
        for x in range(nx):
            a = greater(greater(low[x], low[x + 1]), low[x + 2])
            c = lesser(lesser(high[x], high[x + 1]), high[x + 2])
            p, q, r = middle[x], middle[x + 1], middle[x + 2]
            lo, hi = lesser(p, q), greater(p, q)
            b = greater(lo, lesser(hi, r))
            lo, hi = lesser(a, b), greater(a, b)
            target[x] = greater(lo, lesser(hi, c))



@inline
def interpolated(along, low, high, weight, y, x):  # pragma: no cover - compiled
    """along[y, low[x]] * (1 - weight[x]) + along[y, high[x]] * weight[x], as numpy rounds it."""
    return along[y, low[x]] * (1 - weight[x]) + along[y, high[x]] * weight[x]


@serial
def interpolate_kernel(along, low, high, weight, floor, out):  # pragma: no cover - compiled
    """out[y, x]: the tile values ``along`` the rows interpolated to pixel x, at least floor."""
    ny, nx = out.shape
    for y in range(ny):
        for x in range(nx):
            value = interpolated(along, low, high, weight, y, x)
            out[y, x] = floor if value < floor else value  # noqa: FURB136 (np.maximum: NaN stays NaN)


@serial
def subtract_kernel(band, along, low, high, weight, spread):  # pragma: no cover - compiled
    """band -= the interpolated offset, in float64, stored in band's dtype (0 where band is
    NaN); spread: |band - offset| in float64 (NaN where band is NaN)."""
    ny, nx = band.shape
    for y in range(ny):
        for x in range(nx):
            pixel = band[y, x]
            value = pixel - interpolated(along, low, high, weight, y, x)
            spread[y, x] = abs(value)
            band[y, x] = 0.0 if pixel != pixel else value  # noqa: PLR0124 (NaN)
