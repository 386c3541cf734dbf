"""Bad input gets one clear error, before anything moves or any X-ray is made.

Fuzzed configurations and plan arguments either build or raise exactly one ConfigError /
PlanArgumentError (nothing else, no hang: every example has a deadline); explicit
regression tests pin the findings of the issue-12 tester: empty and partial config files,
values that used to crash or hang the physics engine, ``steps=10**9``, an absurd sample
thickness, a reference position in the sample's field, and NaN motor-record fields over
Channel Access.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from acquisition.config import ConfigError, default_config_dir, load_config
from acquisition.instrument import simulated_instrument
from acquisition.plans import (darkfield_mosaic, darkfield_projection, g2_alignment,
                               phase_step_positions, tube_warmup)
from acquisition.plans.settings import PlanArgumentError, check_reference_clear, tile_field_mm
from support import small_config
from simulators.physics import build_phantom


EMBEDDED = {name: yaml.safe_load((default_config_dir() / name).read_text())
            for name in ("instrument.yaml", "simulation.yaml")}
FUZZ = settings(max_examples=100, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=4)


def leaf_paths(data, path=()):
    """Every key path of a parsed YAML document (mappings and lists)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield path + (key,)
        yield from leaf_paths(value, path + (key,))


PATHS = {name: sorted(leaf_paths(data), key=repr) for name, data in EMBEDDED.items()}
JUNK = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1e12, -1e12, 10**9, 10**400, 1e-300,
                     "junk", "", [], [1, 2], [None], {}, {"a": 1}, None, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10**12, max_value=10**12),
    TEXT,
)


def write_yaml(directory: Path, name: str, data) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def load_from(name: str, data):
    with tempfile.TemporaryDirectory() as directory:
        path = write_yaml(Path(directory), name, data)
        return load_config(**({"instrument": path} if name == "instrument.yaml" else {"simulation": path}))


@st.composite
def mutated_config(draw):
    """(file name, YAML data): the embedded file with 1-3 keys dropped or replaced by junk."""
    name = draw(st.sampled_from(sorted(EMBEDDED)))
    data = copy.deepcopy(EMBEDDED[name])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[name]))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["drop", "junk", "scale"]))
            value = parent[path[-1]]
            if action == "drop" and isinstance(parent, dict):
                parent.pop(path[-1])
            elif action == "scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
                # a plausible edit: within a factor of 2 (whole numbers stay whole)
                scaled = value * draw(st.floats(0.5, 2.0))
                parent[path[-1]] = round(scaled) if isinstance(value, int) else scaled
            else:
                parent[path[-1]] = draw(JUNK)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            continue
    return name, data


@pytest.mark.slow
@FUZZ
@given(mutated_config())
def test_fuzzed_configs_load_or_raise_one_config_error(case):
    name, data = case
    try:
        config = load_from(name, data)
    except ConfigError as err:
        assert name in str(err)
        event("ConfigError")
        return
    event("loaded")  # then the phantom it names can be built quickly
    build_phantom(config.simulation.phantom)


@FUZZ
@given(st.one_of(st.none(), JUNK, st.lists(JUNK, max_size=3)))
def test_any_top_level_yaml_loads_or_raises_one_config_error(data):
    with pytest.raises(ConfigError, match="instrument.yaml"):
        load_from("instrument.yaml", data if data != {} else "")


# --- regression: empty and partial files ---------------------------------------------------

def test_an_empty_file_is_refused_naming_every_missing_section(tmp_path):
    path = write_yaml(tmp_path, "lab.yaml", "")
    with pytest.raises(ConfigError) as err:
        load_config(instrument=path)
    message = str(err.value)
    assert message.startswith("lab.yaml: empty file: missing sections geometry, gratings")
    for section in EMBEDDED["instrument.yaml"]:
        assert section in message


def test_a_missing_section_or_field_is_named(tmp_path):
    data = copy.deepcopy(EMBEDDED["instrument.yaml"])
    del data["dose"]
    del data["stage"]["reference_position_mm"]
    with pytest.raises(ConfigError, match=r"^instrument.yaml: missing section dose; missing field "
                                          r"stage.reference_position_mm \("):
        load_from("instrument.yaml", data)
    sim = copy.deepcopy(EMBEDDED["simulation.yaml"])
    del sim["time_scale"]
    with pytest.raises(ConfigError, match="simulation.yaml: missing field time_scale"):
        load_from("simulation.yaml", sim)


def test_the_embedded_files_given_explicitly_load_like_the_defaults():
    directory = default_config_dir()
    config = load_config(directory / "instrument.yaml", directory / "simulation.yaml")
    assert config == load_config()


# --- regression: values that used to crash or hang the physics engine ---------------------

@pytest.mark.parametrize("name, path, value, field", [
    ("instrument.yaml", ("detector", "rows"), 10**9, "detector.rows"),
    ("instrument.yaml", ("detector", "scintillator_um"), 0.0, "detector.scintillator_um"),
    ("instrument.yaml", ("detector", "pixel_um"), 1e308, "detector.pixel_um"),
    ("instrument.yaml", ("geometry", "g0_g1_mm"), 1e12, "geometry.g0_g1_mm"),
    ("instrument.yaml", ("geometry", "sample_g1_mm"), 2000.0, "geometry.sample_g1_mm"),
    ("instrument.yaml", ("gratings", "g1_period_um"), 1e308, "gratings.g1_period_um"),
    ("instrument.yaml", ("source", "target"), "junk", "source.target"),
    ("instrument.yaml", ("source", "anode_angle_deg"), -1.0, "source.anode_angle_deg"),
    ("instrument.yaml", ("source", "filtration", 0, 0), "junk", r"source.filtration\[0\]\[0\]"),
    ("instrument.yaml", ("source", "filtration", 1, 1), 1e12, r"source.filtration\[1\]\[1\]"),
    ("instrument.yaml", ("tube", "kv"), 1e-300, "tube.kv"),
    ("instrument.yaml", ("tube", "kv_max"), 80.0, "tube.kv_max"),
    ("instrument.yaml", ("dose", "reference_kv"), 1e-300, "dose.reference_kv"),
    ("instrument.yaml", ("scan", "steps"), 10**9, "scan.steps"),
    ("instrument.yaml", ("scan", "dark_frames"), 10**6, "scan.dark_frames"),
    ("instrument.yaml", ("stage", "reference_position_mm"), [10.0, 0.0], "stage.reference_position_mm"),
    ("instrument.yaml", ("g2", "start_um"), 14.0, "g2.start_um"),
    ("instrument.yaml", ("geometry", "g1_g2_mm"), 10**400, "geometry.g1_g2_mm: expected a finite"),
    ("instrument.yaml", ("tube", "ma"), True, "tube.ma: expected a number"),
    ("instrument.yaml", ("gratings",), [1, 2], "gratings: expected a mapping"),
    ("simulation.yaml", ("detector", "swank_factor"), 0.0, "detector.swank_factor"),
    ("simulation.yaml", ("detector", "defect_seed"), -1, "detector.defect_seed"),
    ("simulation.yaml", ("detector", "binning"), 10**6, "detector.binning"),
    ("simulation.yaml", ("detector", "region"), [0, 0, 10**9, 10**9], "detector.region"),
    ("simulation.yaml", ("detector", "read_noise_adu"), math.nan, "detector.read_noise_adu: expected a finite"),
    ("simulation.yaml", ("time_scale",), 1e12, "time_scale"),
    ("simulation.yaml", ("time_scale",), -1.0, "time_scale"),
    ("simulation.yaml", ("phantom", "clusters_per_class"), 10**9, "phantom.clusters_per_class"),
    ("simulation.yaml", ("phantom", "material"), "junk", "phantom.material"),
    ("simulation.yaml", ("phantom", "slab", "thickness_mm"), 1e6, "phantom.slab.thickness_mm"),
    ("simulation.yaml", ("interferometer", "moire_periods"), 1e12, "interferometer.moire_periods"),
])
def test_absurd_values_are_named(name, path, value, field):
    data = copy.deepcopy(EMBEDDED[name])
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"^{name}: {field}"):
        load_from(name, data)
    assert time.monotonic() - started < 5


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """Nine levels of nine aliases: 9**9 leaves if anything walked or printed it whole."""
    levels = ["&a [" + ", ".join(["x"] * 9) + "]"]
    for previous, current in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{current} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = (default_config_dir() / "instrument.yaml").read_text()
    path = write_yaml(tmp_path, "instrument.yaml", text.replace("  steps: 9", f"  steps: [{', '.join(levels)}]"))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="^instrument.yaml: scan.steps: expected a whole number"):
        load_config(instrument=path)
    assert time.monotonic() - started < 1


def test_a_non_text_or_huge_file_is_named(tmp_path):
    binary = tmp_path / "instrument.yaml"
    binary.write_bytes(b"\xff\xfe\x00geometry")
    with pytest.raises(ConfigError, match="instrument.yaml: not UTF-8"):
        load_config(instrument=binary)
    with pytest.raises(ConfigError, match="zero: larger than"):
        load_config(instrument="/dev/zero")


# --- plan arguments ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def instrument(tmp_path_factory):
    return simulated_instrument(small_config(), write_path=tmp_path_factory.mktemp("frames"))


ARG_JUNK = st.one_of(
    JUNK, st.sampled_from([np.float64("nan"), np.int64(9), np.array([1.0, 2.0]), object(), (1, 2, 3),
                           (0.0, 0.0), (120.0, 0.0), (1e9, 0.0), {"id": "s", "thickness_mm": 1e6},
                           {"id": 3}, {"id": "s", "thickness_mm": math.nan}, "s-1", 9, 3, 64, 65])
)
POSITION = st.tuples(st.floats(-200, 200), st.floats(-200, 200))
PLAUSIBLE = {  # values near and across each argument's range
    "steps": st.integers(1, 70), "exposure_s": st.floats(-1, 35), "dark_frames": st.integers(-1, 101),
    "kv": st.floats(0, 60), "ma": st.floats(0, 110), "reference_position_mm": POSITION,
    "sample_position_mm": POSITION, "origin_mm": POSITION, "operator": TEXT,
    "sample": st.fixed_dictionaries({"id": st.just("s-1"), "thickness_mm": st.floats(-1, 200)}),
    "md": st.dictionaries(TEXT, st.integers(), max_size=2), "rows": st.integers(0, 12),
    "columns": st.integers(0, 12), "overlap": st.one_of(st.just(0.0), st.floats(-0.1, 0.6)),
    "snake": st.booleans(),
    "reference_every": st.integers(0, 20), "max_phase_drift_rad": st.floats(-1, 4),
}
COMMON = ["steps", "exposure_s", "dark_frames", "kv", "ma", "reference_position_mm", "sample",
          "operator", "md"]
PROJECTION = COMMON + ["sample_position_mm"]
MOSAIC = COMMON + ["rows", "columns", "overlap", "origin_mm", "snake", "reference_every",
                   "max_phase_drift_rad"]


@st.composite
def plan_arguments(draw, names):
    """Up to 4 keyword arguments, each a plausible value or junk."""
    keys = draw(st.sets(st.sampled_from(names), max_size=4))
    if "overlap" in names and draw(st.booleans()):  # the default mosaic exceeds the dose budget
        keys.add("overlap")
    return {key: draw(st.one_of(PLAUSIBLE[key], PLAUSIBLE[key], ARG_JUNK)) for key in sorted(keys)}


def call_or_refuse(plan, instrument, kwargs):
    try:
        generator = plan(instrument, **kwargs)
    except PlanArgumentError as err:
        assert str(err)
        event("PlanArgumentError")
        return
    event("plan made")
    generator.close()  # made but never run: nothing moved


@FUZZ
@given(plan_arguments(PROJECTION))
def test_projection_with_junk_arguments_builds_or_raises_plan_argument_error(instrument, kwargs):
    call_or_refuse(darkfield_projection, instrument, kwargs)


@FUZZ
@given(plan_arguments(MOSAIC))
def test_mosaic_with_junk_arguments_builds_or_raises_plan_argument_error(instrument, kwargs):
    call_or_refuse(darkfield_mosaic, instrument, kwargs)


@pytest.mark.parametrize("plan, kwargs", [
    (darkfield_projection, {"steps": 10**9}),
    (darkfield_mosaic, {"steps": 10**9}),
    (darkfield_mosaic, {"rows": 10**9}),
    (darkfield_mosaic, {"columns": 11}),
    (darkfield_projection, {"dark_frames": 10**9}),
    (g2_alignment, {"steps": 10**9}),
    (g2_alignment, {"periods": 10**9}),
    (tube_warmup, {"steps": 10**9}),
    (tube_warmup, {"dwell_s": 1e12}),
])
def test_huge_counts_are_refused_before_any_list_is_built(instrument, plan, kwargs):
    started = time.monotonic()
    with pytest.raises(PlanArgumentError, match=f"{next(iter(kwargs))}="):
        plan(instrument, **kwargs)
    assert time.monotonic() - started < 1.0
    with pytest.raises(PlanArgumentError, match="steps=1000000000: must be a whole number >= 3 and <= 64"):
        phase_step_positions(0.0, 4.8, 10**9)


@pytest.mark.parametrize("thickness", [1e6, 151.0, 0.0, 1e-300, -5.0])
def test_an_absurd_sample_thickness_is_refused(instrument, thickness):
    with pytest.raises(PlanArgumentError, match=r"thickness_mm=.*must be in \[0.1, 150\] mm"):
        darkfield_projection(instrument, sample={"id": "s", "thickness_mm": thickness})
    darkfield_projection(instrument, sample={"id": "s", "thickness_mm": 150.0}).close()


def test_a_reference_in_the_sample_field_is_refused(instrument):
    height, width = tile_field_mm(instrument)
    with pytest.raises(PlanArgumentError) as err:
        darkfield_projection(instrument, sample_position_mm=(0.0, 0.0), reference_position_mm=(0.0, 0.0))
    message = str(err.value)
    assert "reference_position_mm=(0, 0) mm" in message and "sample position (0, 0) mm" in message
    assert f"{height:.1f} x {width:.1f} mm" in message
    # just inside and just outside the field, in x and in y
    with pytest.raises(PlanArgumentError, match="overlaps"):
        darkfield_projection(instrument, sample_position_mm=(10.0, 5.0),
                             reference_position_mm=(10.0 + 0.99 * width, 5.0 + 0.5 * height))
    darkfield_projection(instrument, sample_position_mm=(10.0, 5.0),
                         reference_position_mm=(10.0 + width, 5.0)).close()
    darkfield_projection(instrument, sample_position_mm=(10.0, 5.0),
                         reference_position_mm=(10.0, 5.0 - height)).close()
    # a mosaic: the reference must clear every tile
    with pytest.raises(PlanArgumentError, match=r"overlaps the field of the sample position \(-?\d"):
        darkfield_mosaic(instrument, rows=2, columns=3, overlap=0.0, origin_mm=(0.0, 0.0),
                         reference_position_mm=(width, 0.0))
    darkfield_mosaic(instrument, rows=2, columns=3, overlap=0.0, origin_mm=(0.0, 0.0),
                     reference_position_mm=(2.5 * width, 0.0)).close()


def test_the_embedded_default_positions_are_clear(tmp_path):
    config = load_config()
    full = simulated_instrument(config, write_path=tmp_path)
    stage = config.instrument.stage
    check_reference_clear(full, stage.reference_position_mm, [stage.sample_position_mm])
    darkfield_projection(full).close()
    # a 4 x 4 mosaic on the embedded 512 x 640 region (no overlap: within the dose budget);
    # the former default reference (120, 0) lay inside the field of its tile (1.5, 0.5)
    darkfield_mosaic(full, overlap=0.0).close()
    with pytest.raises(PlanArgumentError, match=r"reference_position_mm=\(120, 0\) mm overlaps"):
        darkfield_mosaic(full, overlap=0.0, reference_position_mm=(120.0, 0.0))


# --- the motor-record twin over Channel Access -----------------------------------------------

def test_the_motor_record_refuses_nan_and_absurd_fields_and_still_moves(ioc):
    from caproto.sync.client import read, write
    from ophyd import EpicsMotor

    from ioc_fixture import searching_port

    def get(field):
        with searching_port(ioc.port):
            return float(read(ioc.pv("g2." + field), timeout=3, repeater=False).data[0])

    def refused(field, value):
        before = get(field)
        with searching_port(ioc.port), pytest.raises(Exception):
            write(ioc.pv("g2." + field), value, notify=True, timeout=3, repeater=False)
        after = get(field)
        assert after == before or (math.isnan(before) and math.isnan(after)), f"{field} changed"

    travel = get("HLM") - get("LLM")
    for field, value in [("VELO", math.nan), ("VELO", math.inf), ("VELO", -1.0), ("VELO", 0.0),
                         ("VELO", 1e9), ("BVEL", math.nan), ("BVEL", 0.0), ("BDST", math.nan),
                         ("BDST", travel), ("BDST", -math.inf), ("DLY", math.nan), ("DLY", -1.0),
                         ("DLY", 11.0), ("HLM", math.nan), ("LLM", math.inf),
                         ("HLM", get("LLM") - 1.0), ("LLM", get("HLM") + 1.0), ("VAL", math.nan),
                         ("VMAX", math.nan)]:
        refused(field, value)
    g2 = EpicsMotor(ioc.pv("g2"), name="g2")
    g2.wait_for_connection(timeout=10)
    for target in (1.5, 0.0):
        g2.move(target, wait=True, timeout=5)
        assert g2.position == pytest.approx(target, abs=1e-9)
