"""Loading downstream data: the backbone's serialization, serialized splits, subsets and track kinematics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fm4npp.downstream.config import FinetuneConfig


# What the backbone's weights depend on, of what a bins file records: these must agree with
# the backbone's serialization record (order, max_points and cap policy are taken from that
# record as they are). The detector (and with it the normalisation: ranges, layer radii, energy
# constants of the bins file) may differ: that is using the backbone on another detector.
MODEL_KEYS = ("k", "n_bins", "energy_transform")


def serialization(cfg: FinetuneConfig, extra: dict | None = None):
    """(SerializeConfig, Bins) for the data set: its bins file (``cfg.bins``, else
    <data>/bins.json) and the backbone's serialization record, so adapters see what the FM saw.

    The rule with a backbone that records its whole serialization (``extra["serialize"]``):
    - grid (n_bins), k and energy transform of the bins must equal the record; order,
      max_points, cap policy (and the rest) come from the record: a difference is refused
      ("bins ... do not match the serialization the backbone was pretrained with");
    - the backbone's own bins (its ``bins_hash``, or a mixture component's) are used as they are;
    - other bins fitted on a data set the backbone was pretrained on (its ``bins_sources``: the
      fit source, name + manifest digest, of each of its bins) are refused: they would shift
      the inputs the weights were trained on;
    - bins of another data set (transfer: a sphenix_tpc backbone on aleph data, a HERA one on
      EIC events) are that data's own, fitted on its events (its detector and normalisation):
      they are the right ones, and the returned config names the data's detector.
    Backbones that record no ``bins_sources`` cannot tell data sets apart: there another
    detector is another data set, and on the same detector the bins hash must match. Backbones
    from before the whole record (bins_hash, order, max_points only) always check the hash."""
    import dataclasses

    from fm4npp.serialize.bins import BinsError, load_bins
    from fm4npp.serialize.config import SerializeConfig

    extra = extra or {}
    path = Path(cfg.bins) if cfg.bins else Path(cfg.data) / "bins.json"
    expected = extra.get("bins_hash") or None
    recorded = SerializeConfig(**extra["serialize"]) if "serialize" in extra else None
    bins = load_bins(path)
    fitted = bins.content["config"]
    kw = {"k": int(fitted["k"]), "n_bins": tuple(fitted["n_bins"]), "detector": fitted["detector"],
          "energy_transform": fitted["energy_transform"]}
    if recorded is None:  # checkpoints from before the whole record
        if expected is not None:
            load_bins(path, expected_hash=expected)  # raises BinsError naming both hashes
        for key in ("order", "max_points"):
            if key in extra:
                kw[key] = extra[key]
        return SerializeConfig(**kw), bins
    differ = {k: (getattr(recorded, k), kw[k]) for k in MODEL_KEYS if getattr(recorded, k) != kw[k]}
    if differ:
        raise ValueError(f"bins {path} do not match the serialization the backbone was "
                         f"pretrained with (backbone, bins): {differ}")
    own = {expected} | {c.get("bins_hash") for c in extra.get("mixture") or []}
    theirs = dataclasses.replace(recorded, detector=kw["detector"])
    if expected is None or bins.hash in own:
        return theirs, bins
    sources = extra.get("bins_sources")
    if sources is not None:
        source = str(bins.content.get("fit", {}).get("source", ""))
        if source and source in sources:
            raise BinsError(f"bins file {path} has hash {bins.hash}, but the backbone was "
                            f"pretrained on this data set ({source}) with other serialization "
                            f"bins ({sorted(h for h in own if h)}): use those bins")
        return theirs, bins
    if recorded.detector != kw["detector"]:
        return theirs, bins
    load_bins(path, expected_hash=expected)  # same detector, no sources: the hash must hold
    return recorded, bins


def detectors(cfg: FinetuneConfig, extra: dict | None = None) -> dict:
    """{"data_detector", "backbone_detector"}: the data's (its bins') detector and the one the
    backbone was pretrained on ("" when there is no backbone or it records none)."""
    bins = serialization(cfg, extra)[1]
    return {"data_detector": bins.content["config"]["detector"],
            "backbone_detector": ((extra or {}).get("serialize") or {}).get("detector", "")}


def load_split(cfg: FinetuneConfig, split: str, limit: int = 0, extra: dict | None = None) -> list[dict]:
    """Serialized events of one split (fm4npp.data.pipeline.load_serialized), without the
    pretraining targets (not needed downstream; they are the bulk of the memory)."""
    from fm4npp.data import pipeline

    scfg, bins = serialization(cfg, extra)
    events = pipeline.load_serialized(cfg.data, split, scfg, bins)
    if limit:
        events = events[:limit]
    for e in events:
        e.pop("targets", None)
        e.pop("target_mask", None)
        e.pop("target_energy", None)
    return events


def subset(events: list[dict], n: int, seed: int) -> list[dict]:
    """The first ``n`` events of a seeded permutation: subsets for growing n are nested."""
    if not n or n >= len(events):
        return events
    order = np.random.default_rng(seed).permutation(len(events))[:n]
    return [events[i] for i in sorted(order)]


def event_kinematics(cfg: FinetuneConfig, events: list[dict]) -> list[dict] | None:
    """Per test event {track_id: (pT, eta)} from the Parquet ``tracks`` column (for the
    restricted comparison). None when the data set cannot provide it."""
    from fm4npp.data.io import read_table
    from fm4npp.metrics.tracking import particle_kinematics

    try:
        table = read_table(cfg.data, columns=["event_id", "tracks"])
    except Exception:  # noqa: BLE001 - restricted efficiency is optional
        return None
    by_id = dict(zip(table.column("event_id").to_pylist(), table.column("tracks").to_pylist()))
    out = []
    for e in events:
        kin = particle_kinematics(by_id.get(int(e["event_id"])) or [])
        tids = np.unique(np.asarray(e["track_id"])[~np.asarray(e["noise"], bool)])
        if any(int(t) not in kin for t in tids if t >= 0):
            return None  # a data set without full track truth (e.g. toy events)
        out.append(kin)
    return out


def data_fingerprint(cfg: FinetuneConfig, test_events: list[dict], extra: dict | None = None) -> dict:
    """What must agree for two runs to be scored on the same data (analysis/table2.py checks):
    a digest of the data set's manifest file hashes, the bins' hash and a digest of the test
    events' ids; "" for what the run does not have (events handed in without a data dir)."""
    import hashlib
    import json

    from fm4npp.data.shards import read_manifest

    data_hash = bins_hash = ""
    if cfg.data:
        manifest = read_manifest(cfg.data, missing_ok=True) or {}
        files = manifest.get("files", {})
        data_hash = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16] if files else ""
        bins_hash = serialization(cfg, extra)[1].hash
    ids = json.dumps([int(e["event_id"]) for e in test_events])
    return {"data_hash": data_hash, "bins_hash": bins_hash,
            "test_events_hash": hashlib.sha256(ids.encode()).hexdigest()[:16]}
