"""The pipeline tests' bead clusters read, noise-free, as the class they are labelled."""

import pytest

from acquisition.study import true_ratios
from support import small_config
from reconstruction.microtexture import TABLE_1
from simulators.physics import Phantom, TissueSlab
from specimens import CLASS_BEAD_RADIUS_UM, class_cluster


@pytest.mark.parametrize("texture", sorted(CLASS_BEAD_RADIUS_UM))
def test_a_bead_cluster_reads_inside_its_class_with_margin(texture):
    config = small_config(rows=96, cols=112)
    phantom = Phantom(TissueSlab(), (class_cluster(texture, (0.0, 0.0)),))
    (result,) = true_ratios(config.setup, phantom, config).values()
    low, high = TABLE_1[texture]
    assert result["texture"] == texture
    assert low * 1.1 <= result["ratio"] <= high / 1.1, result  # 10 % inside the range
