"""Detectors as data: finding a detector by name or file, and its in-memory form (re-exported).

A detector is a TOML file under ``fm4npp/sim/detectors/`` (or any path): see
:mod:`fm4npp.sim.detector_files` for its keys and :mod:`fm4npp.sim.detector` for the
dataclasses it is read into. Everything else in fm4npp reaches detectors through this module.
"""

from __future__ import annotations

from fm4npp.sim.config import DEFAULT_DETECTOR
from fm4npp.sim.detector import (READOUTS, SOLID_READOUTS, Detector, LayerModule, Material,  # noqa: F401
                                 MaterialCylinder, MaterialDisk, Volume)
from fm4npp.sim.detector_files import load_detector


def get_detector(name_or_path: str) -> Detector:
    """The detector of ``fm4npp/sim/detectors/<name>.toml``, or of a TOML file path. An unknown
    name is a ValueError listing the known ones; a bad file one naming the file and the key."""
    return load_detector(name_or_path)


def sphenix_tpc() -> Detector:
    """The default detector (today's sPHENIX TPC alone; see SimConfig.detector)."""
    return get_detector(DEFAULT_DETECTOR)
