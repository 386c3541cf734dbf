"""The simulated setup as plain frozen dataclasses (the physics engine's configuration).

Defaults are the paper's instrument (Scherer et al., Sci Rep 6:36991, 2016, Methods):
Mo rotating anode at 40 kVp / 70 mA, G0/G1/G2 periods 10 / 3.24 / 4.8 um, G0-G1 1060 mm,
G1-G2 510 mm, sample 26 mm upstream of G1, source-sample 1134 mm, sample-detector 556 mm,
PaxScan flat panel with 127 um pixels.  ``Setup()`` is that instrument.

The YAML loader in ``acquisition.config`` builds these from ``configs/*.yaml``; the field
names here are the YAML keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Geometry:
    """Distances along the beam, mm.

    The focal spot sits ``source_g0_mm`` before G0, so source-G1 is 1160 mm and, with the
    sample 26 mm upstream of G1, source-sample is 1134 mm and sample-detector 556 mm
    (paper, Methods): a magnification of 1.49 and an 85 um effective pixel.
    """

    source_g0_mm: float = 100.0
    g0_g1_mm: float = 1060.0
    g1_g2_mm: float = 510.0
    g2_detector_mm: float = 20.0
    sample_g1_mm: float = 26.0

    @property
    def source_sample_mm(self) -> float:
        return self.source_g0_mm + self.g0_g1_mm - self.sample_g1_mm

    @property
    def sample_detector_mm(self) -> float:
        return self.sample_g1_mm + self.g1_g2_mm + self.g2_detector_mm

    @property
    def source_detector_mm(self) -> float:
        return self.source_sample_mm + self.sample_detector_mm

    @property
    def magnification(self) -> float:
        """Geometric magnification of the sample plane onto the detector."""
        return self.source_detector_mm / self.source_sample_mm


@dataclass(frozen=True)
class Gratings:
    """The three gratings: periods (um), G1 phase shift (units of pi), absorber heights (um)."""

    g0_period_um: float = 10.0
    g1_period_um: float = 3.24
    g2_period_um: float = 4.8
    g1_phase_shift_pi: float = 0.5
    design_energy_kev: float = 27.0
    talbot_order: int = 3
    g0_gold_um: float = 60.0
    g2_gold_um: float = 60.0
    duty_cycle: float = 0.5
    g2_field_mm: tuple[float, float] = (100.0, 100.0)
    """Active area of G2 (height, width) in mm; outside it there are no fringes."""
    g1_substrate_um: float = 500.0
    g2_substrate_um: float = 1000.0
    """Silicon wafers of G1 and G2, behind the sample: they harden the detected spectrum."""


@dataclass(frozen=True)
class Source:
    """The X-ray tube as the physics sees it (the operating point comes with each frame)."""

    target: str = "Mo"
    anode_angle_deg: float = 12.0
    focal_spot_mm: float = 0.3
    filtration: tuple[tuple[str, float], ...] = (("Be", 1.0), ("Si", 0.7), ("Al", 0.9))
    """What the beam passes before the sample as (spekpy material, thickness mm): the tube's
    beryllium window, G0's silicon wafer, and 0.9 mm Al standing for the rest the paper does
    not describe (tube housing and shutter windows, a thicker G0 substrate).  The paper
    added no filter (Methods); the Al is set so that the HVL at the sample is the measured
    0.8 mm Al at 40 kVp (Scherer et al. 2016, Methods "Dose")."""
    output_factor: float = 2.81
    """Tube output over spekpy's modelled output (dimensionless): calibrates the photon
    fluence to the measured incident air kerma at the sample, 2.1 mGy/s at 40 kVp / 70 mA
    behind G0 (Scherer et al. 2016, Methods "Dose").  It scales every photon count."""


@dataclass(frozen=True)
class Detector:
    """Flat-panel detector (Varian PaxScan 2520D/2550D, DRZ-Plus Gd2O2S:Tb screen of 208 um,
    a-Si TFT, 127 um pixels, 16 bit; Scherer et al. 2016, Methods).  Modelled: the screen's
    absorption per energy, energy-weighted integration, Swank factor; not modelled: light
    spread (MTF), K-fluorescence escape, the screen's packing as measured (docs/physics.md)."""

    pixel_um: float = 127.0
    rows: int = 1536
    columns: int = 1920
    region: tuple[int, int, int, int] | None = None
    """(first row, first column, rows, columns) of the full frame to read out; None = all."""
    binning: int = 1
    scintillator_um: float = 208.0
    gain_adu_per_kev: float = 0.0075
    """Panel gain (ADU per keV absorbed in the screen).  The paper gives none; this puts the
    open beam at 40 kVp / 70 mA / 9 s near 20 000 ADU per 127 um pixel (about 1e5 absorbed
    photons), well inside 16 bit with the fringes' modulation on top."""
    read_noise_adu: float = 3.0
    offset_adu: float = 100.0
    dark_current_adu_per_s: float = 2.0
    saturation_adu: int = 65535
    quantum_noise: bool = True
    read_noise: bool = True
    swank_factor: float = 0.75
    """Swank factor of the Gd2O2S screen: the light yield's spread adds 1/A_s to the noise."""
    offset_drift_adu_per_h: float = 2.0
    """Slow drift of the offset with recorded time (ADU per hour)."""
    lag_fraction: float = 0.0
    """Fraction of the previous frame's signal that appears again (image lag)."""
    defect_fraction: float = 0.0
    """Fraction of pixels that are dead (read only offset) or hot (saturated), half each."""
    defect_seed: int = 11


@dataclass(frozen=True)
class Interferometer:
    """Imperfections of the fringe pattern; each can be set to zero for exact tests."""

    visibility_variation: float = 0.15
    """Relative peak-to-peak variation of the reference visibility over the field."""
    moire_periods: float = 1.5
    """Moire fringes across the field (0 = uniform fringe phase)."""
    moire_angle_deg: float = 30.0
    step_error_um: float = 0.0
    """Systematic G2 positioning error per step, um."""
    step_jitter_um: float = 0.0
    """Random G2 positioning error per frame (rms), um."""
    phase_drift_rad_per_s: float = 0.0
    """Drift of the fringe phase with exposure time elapsed, rad/s."""
    flux_fluctuation: float = 0.0
    """Relative rms fluctuation of the tube output per frame."""


@dataclass(frozen=True)
class Setup:
    """Everything the physics engine needs to know about the instrument."""

    geometry: Geometry = field(default_factory=Geometry)
    gratings: Gratings = field(default_factory=Gratings)
    source: Source = field(default_factory=Source)
    detector: Detector = field(default_factory=Detector)
    interferometer: Interferometer = field(default_factory=Interferometer)


@dataclass(frozen=True)
class TubeState:
    """The tube's operating point for one exposure: kVp (kV), current (mA), shutter and HV."""

    kv: float = 40.0
    ma: float = 70.0
    shutter_open: bool = True
    hv_on: bool = True

    @property
    def beam_on(self) -> bool:
        return self.shutter_open and self.hv_on and self.kv > 0 and self.ma > 0
