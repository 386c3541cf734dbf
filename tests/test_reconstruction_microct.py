"""Micro-CT particle analysis on voxelised spheres of known size."""

import numpy as np
import pytest

from reconstruction.microct import particles, surface_distribution, table1_descriptor


def spheres(shape, centres_radii):
    z, y, x = np.indices(shape)
    volume = np.zeros(shape)
    for (cz, cy, cx), r in centres_radii:
        volume[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 1.0
    return volume


@pytest.mark.parametrize("radius", [10, 20, 30])
def test_volume_surface_and_radius_of_a_sphere(radius):
    size = 2 * radius + 6
    (found,) = particles(spheres((size,) * 3, [((size // 2,) * 3, radius)]), 0.5, voxel_um=6.0)
    r_um = radius * 6.0
    assert found.volume_um3 == pytest.approx(4 / 3 * np.pi * r_um**3, rel=0.02)
    assert found.radius_um == pytest.approx(r_um, rel=0.02)
    assert found.surface_um2 == pytest.approx(4 * np.pi * r_um**2, rel=0.1)


def test_face_connectivity_and_the_minimum_size():
    volume = np.zeros((10, 10, 10))
    volume[2:4, 2:4, 2:4] = 1  # 8 voxels
    volume[4:6, 4:6, 4:6] = 1  # touches the first only along an edge/corner: separate
    volume[8, 8, 8] = 1  # 1 voxel: dropped
    found = particles(volume, 0.5, voxel_um=1.0)
    assert sorted(p.volume_um3 for p in found) == [8.0, 8.0]


def test_table1_descriptors():
    voxel = 25.0  # um
    small = [((10, 10, 10 + 8 * k), 3) for k in range(6)]  # r = 75 um
    assert table1_descriptor(particles(spheres((20, 20, 60), small), 0.5, voxel)) == "ultra-fine"
    mixed = small[:2] + [((10, 10, 40), 8)]  # plus r = 200 um
    assert table1_descriptor(particles(spheres((20, 20, 60), mixed), 0.5, voxel)) == "fine"
    pleo = small + [((30, 30, 30), 12)]  # plus r = 300 um
    found = particles(spheres((45, 45, 60), pleo), 0.5, voxel)
    assert 0.25 <= surface_distribution(found)["large"] <= 0.75
    assert table1_descriptor(found) == "pleomorphic"
    coarse = [((30, 30, 30), 28)]  # r = 700 um
    assert table1_descriptor(particles(spheres((60, 60, 60), coarse), 0.5, voxel)) == "coarse"
    with pytest.raises(ValueError, match="3-D volume"):
        particles(np.zeros((4, 4)), 0.5, 1.0)
