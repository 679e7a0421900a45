"""Track-finding metrics: ARI, double-majority efficiency/purity, spacepoint efficiency/purity.

Inputs are per-event integer arrays over the event's points (any order, the same for truth
and prediction): ``truth`` track ids, ``pred`` predicted track labels, ``noise`` flags.

Conventions (what counts, stated once here):
- Padding: points with ``truth < 0`` are padding (or unlabelled) and are dropped everywhere.
- Noise points (``noise == True``; secondaries below 60 MeV/c, see fm4npp.data.schema) are never
  a truth track. ``noise="exclude"`` (default) drops them before scoring, as if the noise tagger
  had removed them upstream; ``noise="count"`` keeps them on the prediction side: they enlarge
  the predicted tracks they were put in (so they cost purity) and each is its own singleton in
  the truth partition for ARI.
- Predicted label ``-1`` means "assigned to no track": such points are in no predicted track
  (for ARI each is a singleton).
- Double-majority rule (TrackML; the paper's "Performance" section): predicted track P matches
  truth particle T iff |P∩T| > 0.5|P| and |P∩T| > 0.5|T|. Each side matches at most once.
  Tracking efficiency = matched selected particles / selected particles; tracking purity =
  matched predicted tracks / predicted tracks. Both pooled over the whole test set (the paper
  computes "over the entire test set rather than averaged per event").
- Spacepoint efficiency/purity (Table 5; the paper gives no formula, this is our definition):
  efficiency = Σ_T max_P |P∩T| / Σ_T |T| (fraction of truth spacepoints that sit in the
  predicted track holding most of their particle); purity = Σ_P max_T |P∩T| / Σ_P |P|.
  Pooled over the test set.
- ARI: sklearn's adjusted_rand_score per event, reported both as the mean over events
  (``ari_event_mean``) and pooled (``ari_pooled``: one partition of all test points, labels made
  unique per event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

# Restricted comparison with the sPHENIX CA+KF pipeline (paper, "Performance on Downstream Tasks").
RESTRICTED_MIN_HITS = 20
RESTRICTED_PT_MIN = 1.0  # GeV/c
RESTRICTED_ABS_ETA_MAX = 1.1

NOISE_POLICIES = ("exclude", "count")


@dataclass
class EventMatch:
    """Double-majority bookkeeping of one event (after padding/noise handling)."""

    particle_ids: np.ndarray  # (M,) truth track ids
    particle_hits: np.ndarray  # (M,) spacepoints of each particle
    particle_matched: np.ndarray  # (M,) bool
    particle_best_overlap: np.ndarray  # (M,) max_P |P∩T|
    reco_hits: np.ndarray  # (R,) spacepoints of each predicted track
    reco_matched: np.ndarray  # (R,) bool
    reco_best_overlap: np.ndarray  # (R,) max_T |P∩T|
    truth_labels: np.ndarray = field(repr=False, default=None)  # points used for ARI
    pred_labels: np.ndarray = field(repr=False, default=None)


def _clean(truth, pred, noise, policy):
    truth = np.asarray(truth).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} points but prediction has {pred.size}")
    if policy not in NOISE_POLICIES:
        raise ValueError(f"noise policy must be one of {NOISE_POLICIES}, got {policy!r}")
    noise = np.zeros(truth.shape, bool) if noise is None else np.asarray(noise).ravel() > 0
    if noise.shape != truth.shape:
        raise ValueError(f"noise has {noise.size} points, truth has {truth.size}")
    keep = truth >= 0  # padding / unlabelled out
    if policy == "exclude":
        keep &= ~noise
    truth, pred, noise = truth[keep], pred[keep], noise[keep]
    # Noise kept ("count"): it belongs to no particle.
    truth = np.where(noise, -1, truth)
    return truth, pred


def match_event(truth, pred, noise=None, *, noise_policy: str = "exclude") -> EventMatch:
    """Contingency table of one event and its double-majority matches."""
    truth, pred = _clean(truth, pred, noise, noise_policy)
    p_ids, p_hits = np.unique(truth[truth >= 0], return_counts=True)
    in_reco = pred >= 0
    r_ids, r_hits = np.unique(pred[in_reco], return_counts=True)
    both = (truth >= 0) & in_reco
    # overlap counts for every (reco, particle) pair that shares points
    ti = np.searchsorted(p_ids, truth[both])
    ri = np.searchsorted(r_ids, pred[both])
    pairs, overlap = np.unique(np.stack([ri, ti], 1).reshape(-1, 2), axis=0, return_counts=True)
    pairs = pairs.reshape(-1, 2).astype(np.int64)
    p_best = np.zeros(p_ids.size, np.int64)
    r_best = np.zeros(r_ids.size, np.int64)
    np.maximum.at(p_best, pairs[:, 1], overlap)
    np.maximum.at(r_best, pairs[:, 0], overlap)
    ok = (2 * overlap > r_hits[pairs[:, 0]]) & (2 * overlap > p_hits[pairs[:, 1]])
    p_matched = np.zeros(p_ids.size, bool)
    r_matched = np.zeros(r_ids.size, bool)
    p_matched[pairs[ok, 1]] = True
    r_matched[pairs[ok, 0]] = True

    # ARI partitions: noise (count policy) and unassigned points become singletons.
    t_lab = truth.copy()
    n_single = int((t_lab < 0).sum())
    t_lab[t_lab < 0] = t_lab.max(initial=0) + 1 + np.arange(n_single)
    p_lab = pred.copy()
    n_single = int((p_lab < 0).sum())
    p_lab[p_lab < 0] = p_lab.max(initial=0) + 1 + np.arange(n_single)
    return EventMatch(p_ids, p_hits, p_matched, p_best, r_hits, r_matched, r_best, t_lab, p_lab)


def adjusted_rand(truth_labels, pred_labels) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(truth_labels, pred_labels))


def particle_kinematics(tracks: Iterable[Mapping]) -> dict[int, tuple[float, float]]:
    """{track_id: (pT [GeV/c], eta)} from an event's ``tracks`` list (schema structs)."""
    out = {}
    for t in tracks:
        px, py, pz = float(t["px"]), float(t["py"]), float(t["pz"])
        pt = float(np.hypot(px, py))
        eta = float(np.arcsinh(pz / pt)) if pt > 0 else float(np.sign(pz) * np.inf)
        out[int(t["track_id"])] = (pt, eta)
    return out


def restricted_selection(
    match: EventMatch,
    kinematics: Mapping[int, tuple[float, float]],
    *,
    min_hits: int = RESTRICTED_MIN_HITS,
    pt_min: float = RESTRICTED_PT_MIN,
    abs_eta_max: float = RESTRICTED_ABS_ETA_MAX,
) -> np.ndarray:
    """Particles of the paper's comparison with the sPHENIX pipeline: >= 20 spacepoints,
    pT > 1 GeV/c, |eta| < 1.1. Returns a bool mask over ``match.particle_ids``; a particle
    missing from ``kinematics`` raises (silently dropping it would bias the efficiency)."""
    sel = np.zeros(match.particle_ids.size, bool)
    for i, (tid, nh) in enumerate(zip(match.particle_ids, match.particle_hits)):
        if int(tid) not in kinematics:
            raise KeyError(f"track_id {int(tid)} has hits but no entry in the tracks list")
        pt, eta = kinematics[int(tid)]
        sel[i] = nh >= min_hits and pt > pt_min and abs(eta) < abs_eta_max
    return sel


def tracking_metrics(
    truth: Sequence[np.ndarray],
    pred: Sequence[np.ndarray],
    noise: Sequence[np.ndarray] | None = None,
    *,
    noise_policy: str = "exclude",
    min_hits: int = 1,
    kinematics: Sequence[Mapping[int, tuple[float, float]]] | None = None,
) -> dict:
    """All track-finding metrics over a test set (lists of per-event arrays).

    ``min_hits``: particles with fewer spacepoints (after padding/noise handling) are left out
    of the efficiency (numerator and denominator); purity counts every predicted track.
    ``kinematics``: per-event {track_id: (pT, eta)}; when given, the restricted-comparison
    efficiency (``restricted_efficiency``) is added.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} truth events but {len(pred)} predicted events")
    noise = [None] * len(truth) if noise is None else noise
    aris, t_all, p_all = [], [], []
    n_part = n_part_matched = n_reco = n_reco_matched = 0
    sp_eff_num = sp_eff_den = sp_pur_num = sp_pur_den = 0
    n_restr = n_restr_matched = 0
    offset_t = offset_p = 0
    for ev, (t, p, nz) in enumerate(zip(truth, pred, noise)):
        m = match_event(t, p, nz, noise_policy=noise_policy)
        if m.truth_labels.size == 0:
            continue
        aris.append(adjusted_rand(m.truth_labels, m.pred_labels))
        t_all.append(m.truth_labels + offset_t)
        p_all.append(m.pred_labels + offset_p)
        offset_t += int(m.truth_labels.max()) + 1
        offset_p += int(m.pred_labels.max()) + 1
        sel = m.particle_hits >= min_hits
        n_part += int(sel.sum())
        n_part_matched += int((m.particle_matched & sel).sum())
        n_reco += m.reco_hits.size
        n_reco_matched += int(m.reco_matched.sum())
        sp_eff_num += int(m.particle_best_overlap.sum())
        sp_eff_den += int(m.particle_hits.sum())
        sp_pur_num += int(m.reco_best_overlap.sum())
        sp_pur_den += int(m.reco_hits.sum())
        if kinematics is not None:
            rs = restricted_selection(m, kinematics[ev])
            n_restr += int(rs.sum())
            n_restr_matched += int((m.particle_matched & rs).sum())

    def ratio(a, b):
        return float(a / b) if b else float("nan")

    out = {
        "ari_event_mean": float(np.mean(aris)) if aris else float("nan"),
        "ari_pooled": adjusted_rand(np.concatenate(t_all), np.concatenate(p_all)) if t_all else float("nan"),
        "efficiency": ratio(n_part_matched, n_part),
        "purity": ratio(n_reco_matched, n_reco),
        "spacepoint_efficiency": ratio(sp_eff_num, sp_eff_den),
        "spacepoint_purity": ratio(sp_pur_num, sp_pur_den),
        "n_events": len(aris),
        "n_true_tracks": n_part,
        "n_true_matched": n_part_matched,
        "n_reco_tracks": n_reco,
        "n_reco_matched": n_reco_matched,
        "noise_policy": noise_policy,
        "min_hits": min_hits,
    }
    if kinematics is not None:
        out["restricted_efficiency"] = ratio(n_restr_matched, n_restr)
        out["n_restricted_tracks"] = n_restr
    return out
