"""The serialization bins file: everything fitted that defines how events become sequences.

One versioned JSON file holds the normalisation ranges, the raster grid edges (r at module
boundaries, eta/phi equal-frequency), the energy standardisation constants and the
difficulty-bin -> loss-weight table. Its identity is the sha256 of the canonical JSON of
``content``; checkpoints record that hash and `load_bins(path, expected_hash=...)` refuses any
other file.

Difficulty weights. Events are binned (equal frequency) by their mean k-next-neighbour distance
d_e. A model's squared error on an event scales with the squared neighbour distances, so bin g
gets w_g proportional to 1 / mean_{e in g}(mean squared neighbour distance of e): every bin then
contributes a comparable weighted loss. Weights are normalised so that their mean over the
fitted events is 1 (the overall loss scale is unchanged). Events without any valid neighbour
pair get weight 1.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fm4npp.files import atomic_write_json
from fm4npp.serialize.config import SerializeConfig, kept_points
from fm4npp.serialize.coords import (ETA, PHI, R, detector_geometry, normalise, normalised_coords, transform_energy,
                                    z_measured)

FORMAT = "fm4npp.serialize.bins"
VERSION = 1


class BinsError(ValueError):
    """A bins file is missing, malformed, or not the one expected."""


def content_hash(content: dict) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Bins:
    """Parsed bins file. Edges are in normalised units; outer edges are -inf/+inf in effect
    (points outside the fitted range fall in the first/last bin)."""

    content: dict  # treated as immutable: derived values below are cached

    @cached_property
    def hash(self) -> str:
        return content_hash(self.content)

    @cached_property
    def ranges(self) -> dict:
        return {key: tuple(v) for key, v in self.content["ranges"].items()}

    @property
    def layer_radii_cm(self) -> tuple[float, ...]:
        return tuple(self.content["geometry"]["layer_radii_cm"])

    @property
    def snap_r_tol_cm(self) -> float:
        return float(self.content["geometry"]["snap_r_tol_cm"])

    @cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(r_edges, eta_edges, phi_edges) including the outer edges."""
        e = self.content["edges"]
        return tuple(np.asarray(e[name], dtype=np.float64) for name in ("r", "eta", "phi"))

    @property
    def n_bins(self) -> tuple[int, int, int]:
        return tuple(len(e) - 1 for e in self.edges)

    @property
    def energy(self) -> dict:
        return self.content["energy"]

    @property
    def difficulty(self) -> dict | None:
        return self.content.get("difficulty")

    def box_indices(self, coords: np.ndarray) -> np.ndarray:
        """(N, 3) normalised (r, phi, eta) -> (N, 3) int bin indices along (r, eta, phi)."""
        r_e, eta_e, phi_e = self.edges
        out = np.empty((coords.shape[0], 3), dtype=np.int64)
        for j, (col, e) in enumerate(((R, r_e), (ETA, eta_e), (PHI, phi_e))):
            out[:, j] = np.clip(np.searchsorted(e[1:-1], coords[:, col], side="right"), 0, len(e) - 2)
        return out

    def weight_for(self, mean_distance: float) -> float:
        """Loss weight of an event with this mean k-next-neighbour distance."""
        diff = self.difficulty
        if diff is None or not math.isfinite(mean_distance):
            return 1.0
        g = int(np.searchsorted(np.asarray(diff["edges"][1:-1]), mean_distance, side="right"))
        return float(diff["weights"][g])


def save_bins(bins: Bins, path) -> str:
    """Atomic write; returns the content hash."""
    path = Path(path)
    doc = {"format": FORMAT, "version": VERSION, "sha256": bins.hash, "content": bins.content}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc, indent=1, sort_keys=True, allow_nan=False)
    return bins.hash


def load_bins(path, expected_hash: str | None = None) -> Bins:
    """Load and verify a bins file. Missing file, wrong format, a stored hash that does not
    match the content, or a hash other than `expected_hash`: BinsError."""
    path = Path(path)
    if not path.is_file():
        raise BinsError(f"bins file {path} does not exist (make one with `fm4npp serialize fit`)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BinsError(f"bins file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BinsError(f"bins file {path}: not a {FORMAT} document")
    if doc.get("version") != VERSION:
        raise BinsError(f"bins file {path}: version {doc.get('version')!r}, this code reads {VERSION}")
    bins = Bins(doc["content"])
    if bins.hash != doc.get("sha256"):
        raise BinsError(f"bins file {path}: content hash {bins.hash} != stored {doc.get('sha256')} "
                        "(file edited or corrupted)")
    if expected_hash is not None and bins.hash != expected_hash:
        raise BinsError(f"bins file {path} has hash {bins.hash}, expected {expected_hash} "
                        "(the checkpoint was trained with other serialization bins)")
    return bins


def resolved_ranges(cfg: SerializeConfig) -> dict:
    geo = detector_geometry(cfg.detector)
    if cfg.r_range_cm is not None:
        r_range = cfg.r_range_cm
    else:
        r_range = (min(lo for lo, _ in geo.module_edges_cm), max(hi for _, hi in geo.module_edges_cm))
    return {"r_cm": list(r_range), "phi": list(cfg.phi_range), "eta": list(cfg.eta_range)}


def _share(n: int, weights) -> list[int]:
    """n split over len(weights) parts in proportion to weights (largest remainder, ties to the
    first part), every part at least 1 (n >= len(weights))."""
    w = np.asarray(weights, dtype=np.float64)
    quota = 1 + (n - len(w)) * w / w.sum()
    out = np.floor(quota).astype(int)
    rest = np.argsort(-(quota - out), kind="stable")[: n - int(out.sum())]
    out[rest] += 1
    return out.tolist()


def r_cuts_cm(layer_radii_cm, module_edges_cm, n_r: int) -> list[float]:
    """The n_r - 1 raster-grid r boundaries [cm], always between measurement layers, so no
    layer is split and the r bins go inside out (silicon before the TPC).

    n_r >= modules: every module gets its own bins, the extra ones shared in proportion to the
    modules' layer counts (the TPC-only default: 2 per module); a module of L layers split in
    m bins is cut after layers round(j L / m), between modules in the middle of the gap.
    n_r < modules (e.g. a 9-superlayer drift chamber): cuts only in module gaps, at those
    closest to equal layer counts per bin."""
    radii = np.sort(np.asarray(layer_radii_cm, dtype=np.float64))
    modules = sorted((float(lo), float(hi)) for lo, hi in module_edges_cm)
    per_module = [radii[(radii >= lo) & (radii <= hi)] for lo, hi in modules]
    sizes = [len(r) for r in per_module]
    if min(sizes, default=0) == 0 or sum(sizes) != len(radii):
        raise ValueError(f"layer radii {radii.tolist()} do not fall one module each in {modules}")
    gaps = [0.5 * (modules[i - 1][1] + modules[i][0]) for i in range(1, len(modules))]
    if n_r < len(modules):
        bounds = np.cumsum(sizes)[:-1]  # layers below each module gap
        picked = sorted({int(np.argmin(np.abs(bounds - j * len(radii) / n_r))) for j in range(1, n_r)})
        if len(picked) != n_r - 1:
            raise ValueError(f"cannot place {n_r} r bins on module gaps of {len(modules)} modules")
        return [gaps[i] for i in picked]
    cuts = []
    for i, (r, m) in enumerate(zip(per_module, _share(n_r, sizes))):
        if i > 0:
            cuts.append(gaps[i - 1])
        for j in range(1, m):
            g = min(max(1, round(j * len(r) / m)), len(r) - 1) if len(r) > 1 else None
            if g is None:
                raise ValueError(f"module {modules[i]} has one layer and cannot hold {m} r bins")
            cuts.append(0.5 * (r[g - 1] + r[g]))
    return cuts


def r_edges(geo, r_range_cm, n_r: int) -> list[float]:
    """Normalised r edges of the raster grid (see r_cuts_cm); outer edges at 0 and 1."""
    cuts = r_cuts_cm(geo.layer_radii_cm, geo.module_edges_cm, n_r)
    return [0.0] + [float(normalise(c, *r_range_cm)) for c in cuts] + [1.0]


def equal_frequency_edges(values: np.ndarray, n: int) -> list[float]:
    """n bins holding equal numbers of the sample; outer edges 0 and 1."""
    inner = np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, n) / n) if n > 1 else []
    return [0.0] + [float(v) for v in inner] + [1.0]


def difficulty_table(mean_dist: np.ndarray, mean_sq_dist: np.ndarray, n_bins: int, k: int) -> dict:
    """Equal-frequency bins of the events' mean neighbour distance and weights ~ 1/<d^2>_bin,
    normalised to mean 1 over the fitted events (see module docstring)."""
    ok = np.isfinite(mean_dist) & np.isfinite(mean_sq_dist) & (mean_sq_dist > 0)
    d, d2 = mean_dist[ok], mean_sq_dist[ok]
    if d.size == 0:
        raise ValueError("no event with a valid neighbour pair to fit difficulty bins on")
    n_bins = max(1, min(n_bins, d.size))
    inner = np.unique(np.quantile(d, np.arange(1, n_bins) / n_bins)) if n_bins > 1 else np.array([])
    g = np.searchsorted(inner, d, side="right")
    raw = np.array([1.0 / d2[g == b].mean() if (g == b).any() else np.nan for b in range(len(inner) + 1)])
    raw = np.where(np.isfinite(raw), raw, np.nanmean(raw))  # empty bin (duplicate quantile): neighbour mean
    raw /= raw[g].mean()
    return {
        "k": int(k),
        "statistic": "mean k-next-neighbour distance (normalised units)",
        "edges": [float(d.min())] + [float(v) for v in inner] + [float(d.max())],
        "weights": [float(w) for w in raw],
        "events_per_bin": [int((g == b).sum()) for b in range(len(inner) + 1)],
        "rule": "w_g ~ 1/mean(mean squared neighbour distance in bin g), mean over events = 1",
    }


def make_bins(cfg: SerializeConfig, phi_norm: np.ndarray, eta_norm: np.ndarray, energy: np.ndarray,
              ranges: dict, difficulty: dict | None, fit_info: dict) -> Bins:
    geo = detector_geometry(cfg.detector)
    n_r, n_eta, n_phi = cfg.n_bins
    e = transform_energy(energy, cfg.energy_transform)
    std = float(e.std())
    content = {
        "config": {"n_bins": list(cfg.n_bins), "detector": cfg.detector,
                   "energy_transform": cfg.energy_transform, "k": cfg.k},
        "ranges": ranges,
        "geometry": {"layer_radii_cm": list(geo.layer_radii_cm),
                     "module_edges_cm": [list(m) for m in geo.module_edges_cm],
                     "snap_r_tol_cm": float(cfg.snap_r_tol_cm)},
        "edges": {
            "r": r_edges(geo, ranges["r_cm"], n_r),
            "eta": equal_frequency_edges(eta_norm, n_eta),
            "phi": equal_frequency_edges(phi_norm, n_phi),
        },
        "energy": {"transform": cfg.energy_transform, "mean": float(e.mean()), "std": std if std > 0 else 1.0},
        "fit": fit_info,
    }
    if difficulty is not None:
        content["difficulty"] = difficulty
    return Bins(json.loads(json.dumps(content)))  # plain JSON types, so the hash is stable



def fit_bins(events, cfg: SerializeConfig, source: str = "") -> Bins:
    """Fit a bins file on an iterable of event dicts (hit_x, hit_y, hit_z [cm], hit_energy,
    optionally hit_sigma_z).

    Events with fewer than 2 points, and (cap policy "drop") events over the cap, are skipped.
    The eta edges are fitted on points with a measured z only (the others all sit at eta 0).
    """
    from fm4npp.serialize.knn import mean_neighbor_distance, next_neighbors

    ranges = resolved_ranges(cfg)
    geo = detector_geometry(cfg.detector)
    phis, etas, energies, md, msd = [], [], [], [], []
    n_events = 0
    for ev in events:
        n = len(ev["hit_x"])
        if not kept_points(n, cfg):
            continue
        coords = normalised_coords(ev["hit_x"], ev["hit_y"], ev["hit_z"], ranges,
                                   geo.layer_radii_cm, cfg.snap_r_tol_cm)
        zm = z_measured(ev.get("hit_sigma_z"), n)
        phis.append(coords[:, PHI])
        etas.append(coords[zm, ETA])
        energies.append(np.asarray(ev["hit_energy"], dtype=np.float64))
        d, d2 = mean_neighbor_distance(next_neighbors(coords, cfg.k, cfg.periodic_phi, zm)[1])
        md.append(d)
        msd.append(d2)
        n_events += 1
    if n_events == 0:
        raise ValueError(f"no usable event (>= 2 points) to fit serialization bins on {source!r}")
    diff = difficulty_table(np.asarray(md), np.asarray(msd), cfg.n_difficulty_bins, cfg.k)
    fit_info = {"source": str(source), "events": n_events, "points": int(sum(len(p) for p in phis))}
    return make_bins(cfg, np.concatenate(phis), np.concatenate(etas), np.concatenate(energies),
                     ranges, diff, fit_info)


def fit_bins_from_dir(data_dir, cfg: SerializeConfig, pipeline_cfg=None) -> Bins:
    """Fit on the first cfg.fit_events events of the *train* split of a data set directory
    (so validation and test events never shape the serialization)."""
    import itertools

    from fm4npp.serialize.config import PipelineConfig
    from fm4npp.serialize.splits import iter_split_events

    pcfg = pipeline_cfg if pipeline_cfg is not None else PipelineConfig(serialize=cfg)
    recorded = dataset_detector(data_dir)
    if recorded is not None and recorded != detector_name(cfg.detector):
        raise ValueError(f"data set {data_dir} was simulated with detector {recorded!r}, the serialization "
                         f"config names {cfg.detector!r}: fit with --detector {recorded}")
    events = iter_split_events(data_dir, "train", pcfg,
                               columns=["event_id", "hit_x", "hit_y", "hit_z", "hit_energy", "hit_sigma_z"])
    return fit_bins(itertools.islice(events, cfg.fit_events), cfg, source=_source_id(data_dir))


def detector_name(name_or_path: str) -> str:
    """The name inside a detector file (a path or a name of fm4npp/sim/detectors/)."""
    from fm4npp.sim.geometry import get_detector

    return get_detector(name_or_path).name


def dataset_detector(data_dir) -> str | None:
    """The detector name a data set's manifest records; None without one (imported data,
    bare shards)."""
    from fm4npp.data.shards import read_manifest  # here: it imports pyarrow, bins need not

    path = Path(data_dir)
    manifest = read_manifest(path, missing_ok=True) if path.is_dir() else None
    detector = (manifest or {}).get("detector") or {}
    return detector.get("name") if isinstance(detector, dict) else None


def _source_id(data_dir) -> str:
    """The data set's name plus a digest of its manifest's file hashes (not its path, so the
    same data fitted anywhere gives the same bins hash)."""
    from fm4npp.data.shards import read_manifest  # here: it imports pyarrow, bins need not

    path = Path(data_dir)
    manifest = read_manifest(path, missing_ok=True) if path.is_dir() else None
    if manifest is not None:
        files = manifest.get("files", {})
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        return f"{path.name} manifest:{digest}"
    return path.name
