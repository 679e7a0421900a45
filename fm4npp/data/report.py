"""``fm4npp data report``: the figures a physicist checks first, and their numbers as JSON.

Figures (PNG): hits and tracks per event; hit r (48 layer spikes), z (|z| < 102.3 cm, the
central membrane gap) and phi (12 sector gaps); primary charged eta and pT; dE/dx
(truncated mean of the lowest 70 % of cluster charges) vs p by species; PID class and noise
fractions; hits per track vs pT; an x-y and r-z event display coloured by track; per
subsystem (``hit_subsystem``; files before schema version 3 are TPC only): hits per layer and
the PID-class and noise mix.
Numbers: :func:`fm4npp.data.stats.summary_from`, with :data:`fm4npp.data.stats.EXPECTATIONS`,
and ``subsystems`` (:func:`subsystem_numbers`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fm4npp.data.errors import DataError, Problem
from fm4npp.data.dataset_files import shard_paths
from fm4npp.data.io import iter_tables, read_events
from fm4npp.data.schema import PID_CLASSES, PRE_V3_SUBSYSTEM, SUBSYSTEM_IDS, SUBSYSTEMS
from fm4npp.data.stats import EXPECTATIONS, Collected, collect, generated_per_written, summary_from

SPECIES = {"pi": (211, "tab:blue"), "K": (321, "tab:green"), "p": (2212, "tab:red"), "e": (11, "tab:orange")}
Z_MAX_CM = 102.325
DEDX_MIN_HITS = 15
DEDX_MAX_ABS_ETA = 1.0
LAYER_GAP_CM = 0.01  # hits of one layer share its radius up to float32 jitter (~1e-5 cm); layers are > 0.3 cm apart


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str, figures: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    _plt().close(fig)
    figures.append(name)


def _no_data(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="tab:red")


def _per_event(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    hpe = c.hits_per_event
    ax[0].hist(hpe, bins=np.linspace(0, max(hpe.max(initial=1), 1) * 1.02, 50), color="k", histtype="step")
    ax[0].axvline(hpe.mean(), color="tab:red", ls="--", label=f"mean {hpe.mean():.0f}")
    ax[0].axvline(np.percentile(hpe, 99), color="tab:blue", ls=":", label=f"99% {np.percentile(hpe, 99):.0f}")
    ax[0].set(xlabel="hits per event", ylabel="events", yscale="log", title=f"{c.n_events} events")
    ax[0].legend()
    tpe = c.tracks_per_event
    bins = np.arange(0, max(tpe.max(initial=1), 1) + 2) - 0.5
    ax[1].hist(tpe, bins=bins, histtype="step", color="k", label=f"tracks listed (mean {tpe.mean():.1f})")
    ev_of_track = np.repeat(np.arange(len(tpe)), tpe)
    with_hits = np.bincount(ev_of_track[c.track_nhits > 0], minlength=len(tpe))
    ax[1].hist(with_hits, bins=bins, histtype="step", color="tab:blue",
               label=f"tracks with hits (mean {with_hits.mean():.1f})")
    ax[1].set(xlabel="tracks per event", ylabel="events", yscale="log")
    ax[1].legend()
    _save(fig, out, "hits_tracks_per_event.png", figures)


def _hit_positions(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].hist(c.hit_r, bins=np.arange(20, 80, 0.05), color="k", histtype="stepfilled")
    n_spikes = len(np.unique(np.round(c.hit_r, 1)))
    ax[0].set(xlabel="hit r [cm]", ylabel="hits / 0.05 cm", yscale="log",
              title=f"hit radius ({n_spikes} distinct radii at 1 mm; expect 48)")
    ax[1].hist(c.hit_z, bins=np.linspace(-110, 110, 221), color="k", histtype="step")
    for z in (-Z_MAX_CM, Z_MAX_CM):
        ax[1].axvline(z, color="tab:red", ls="--")
    ax[1].set(xlabel="hit z [cm]", ylabel="hits / cm", title="hit z (red: max drift ±102.3 cm)")
    ax[2].hist(np.degrees(c.hit_phi), bins=np.linspace(-180, 180, 721), color="k", histtype="step")
    ax[2].set(xlabel="hit phi [deg]", ylabel="hits / 0.5 deg", title="hit phi (12 sector gaps)")
    _save(fig, out, "hit_r_z_phi.png", figures)


def _tracks(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    sel = c.track_primary & (c.track_charge != 0)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    eta = c.track_eta[sel & np.isfinite(c.track_eta)]
    bins = np.linspace(-5, 5, 41)
    h, edges = np.histogram(eta, bins=bins)
    per_event = max(c.n_events, 1) * generated_per_written(c)
    ax[0].step(edges[:-1], h / per_event / np.diff(edges), where="post", color="k",
               label="stored primary charged tracks")
    ax[0].axhline(2.39, color="tab:red", ls="--", label="2.39 (PYTHIA inelastic, |eta|<0.5)")
    if "generator_nch_eta05" in c.counts and c.counts.get("generated_events"):
        gen = c.counts["generator_nch_eta05"] / c.counts["generated_events"]
        ax[0].plot([-0.5, 0.5], [gen, gen], color="tab:blue", lw=3, label=f"generator, this data set: {gen:.2f}")
    ax[0].axvspan(-1.1, 1.1, color="0.9", label="TPC |eta| < 1.1")
    ax[0].set(xlabel="eta", ylabel="dNch/deta per generated event",
              title="primary charged (only tracks with hits are stored)")
    ax[0].legend(fontsize=8)
    pt = c.track_pt[sel]
    ax[1].hist(pt, bins=np.linspace(0, 5, 51), histtype="step", color="k")
    ax[1].set(xlabel="pT [GeV/c]", ylabel="tracks", title="primary charged pT")
    if pt.any():
        ax[1].set_yscale("log")
    else:
        _no_data(ax[1], "no primary charged tracks with known momentum")
    _save(fig, out, "tracks_eta_pt.png", figures)


def _dedx(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    eta = np.nan_to_num(c.track_eta, nan=99)
    good = (c.track_nhits >= DEDX_MIN_HITS) & (np.abs(eta) < DEDX_MAX_ABS_ETA)
    # Charge per pad row grows with the path in the row, ~cosh(eta) for the dip angle.
    dedx = c.track_dedx / np.cosh(np.where(good, eta, 0))
    apdg = np.abs(c.track_pdg)
    for name, (pdg, color) in SPECIES.items():
        s = good & (apdg == pdg)
        ax.scatter(c.track_p[s], dedx[s], s=4, color=color, alpha=0.6, label=f"{name} ({s.sum()})")
    ax.set(xlabel="p at production [GeV/c]", ylabel="truncated mean (lowest 70 %) hit_energy / cosh(eta)",
           title=f"dE/dx vs p (tracks with >= {DEDX_MIN_HITS} hits, |eta| < {DEDX_MAX_ABS_ETA})")
    shown = good & np.isin(apdg, [pdg for pdg, _ in SPECIES.values()]) & (c.track_p > 0)
    if shown.any():
        ax.set(xscale="log", yscale="log", xlim=(0.05, 10))
        ax.legend(markerscale=3)
    else:
        _no_data(ax, "no pi/K/p/e tracks with known momentum and enough hits")
    _save(fig, out, "dedx_vs_p.png", figures)


def _classes(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    n = max(len(c.hit_pid_class), 1)
    frac = [np.sum(c.hit_pid_class == k) / n for k in PID_CLASSES]
    bars = ax[0].bar(list(PID_CLASSES.values()), frac, color="tab:blue")
    ax[0].bar_label(bars, labels=[f"{f:.3f}" for f in frac])
    ax[0].set(ylabel="fraction of hits", title="PID class of hits")
    noise = c.hit_noise.mean() if len(c.hit_noise) else 0
    bars = ax[1].bar(["signal", "noise"], [1 - noise, noise], color=["tab:green", "tab:gray"])
    ax[1].bar_label(bars, labels=[f"{1 - noise:.3f}", f"{noise:.3f}"])
    ax[1].set(ylabel="fraction of hits", title="noise (p < 60 MeV/c at production)")
    _save(fig, out, "class_fractions.png", figures)


def _hits_per_track(c: Collected, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    has = c.track_nhits > 0
    central = np.abs(np.nan_to_num(c.track_eta, nan=99)) < 0.5
    prim = c.track_primary & (c.track_charge != 0)
    ax.scatter(c.track_pt[has & ~(prim & central)], c.track_nhits[has & ~(prim & central)], s=3,
               color="0.6", label="other tracks with hits")
    s = has & prim & central
    ax.scatter(c.track_pt[s], c.track_nhits[s], s=5, color="tab:blue", label="primary charged, |eta| < 0.5")
    ax.axhline(48, color="tab:red", ls="--", label="48 layers")
    ax.axvline(0.2, color="k", ls=":")
    ax.set(xlabel="pT at production [GeV/c]", ylabel="hits per track",
           title="hits per track vs pT (loopers below ~0.16 GeV/c)")
    if (c.track_pt[has] > 0).any():
        ax.set(xscale="log", xlim=(0.01, 10))
    else:
        _no_data(ax, "no tracks with known momentum")
    ax.legend(fontsize=8)
    _save(fig, out, "hits_per_track_vs_pt.png", figures)


def _event_display(path, row: int, out: Path, figures: list[str]) -> None:
    plt = _plt()
    event = None
    for i, ev in enumerate(read_events(path, ["event_id", "hit_x", "hit_y", "hit_z", "hit_track_id", "hit_noise"],
                                       empty="keep")):
        if i == row:
            event = ev
            break
    if event is None:
        raise DataError(Problem(str(path), f"no event at row {row} for the event display"))
    x, y, z = event["hit_x"], event["hit_y"], event["hit_z"]
    r = np.hypot(x, y)
    _, colour_index = np.unique(event["hit_track_id"], return_inverse=True)
    # tab10 without its grey, which is kept for noise hits
    palette = np.array([plt.get_cmap("tab10")(i) for i in range(10) if i != 7])
    colours = palette[colour_index % len(palette)]
    noise = event["hit_noise"].astype(bool)
    colours[noise] = (0.55, 0.55, 0.55, 1.0)
    fig, ax = plt.subplots(1, 2, figsize=(13, 6))
    ax[0].scatter(x, y, s=3, c=colours)
    for rr in (30.0, 78.0):
        ax[0].add_patch(plt.Circle((0, 0), rr, fill=False, color="0.8", lw=0.8))
    ax[0].set(xlabel="x [cm]", ylabel="y [cm]", aspect="equal", xlim=(-80, 80), ylim=(-80, 80),
              title=f"event {int(event['event_id'])}: {len(x)} hits, "
                    f"{len(np.unique(event['hit_track_id']))} tracks (grey: noise)")
    ax[1].scatter(z, r, s=3, c=colours)
    ax[1].set(xlabel="z [cm]", ylabel="r [cm]", xlim=(-105, 105), ylim=(0, 80), title="r-z view")
    _save(fig, out, "event_display.png", figures)


def _subsystem_hits(path_or_dir, max_events: int | None) -> tuple[int, dict]:
    """(events read, flat per-hit arrays r, subsystem, pid_class, noise) of the first
    ``max_events`` events; a file without ``hit_subsystem`` (schema < 3) is all TPC."""
    import pyarrow.parquet as pq

    parts, n = [], 0
    for path in shard_paths(path_or_dir):
        has = "hit_subsystem" in pq.read_schema(path).names
        cols = ["hit_x", "hit_y", "hit_pid_class", "hit_noise"] + (["hit_subsystem"] if has else [])
        for _, _, table in iter_tables(path, cols, check=False, empty="keep"):
            if max_events is not None:
                table = table.slice(0, max_events - n)
            n += table.num_rows
            f = {c: table.column(c).combine_chunks().flatten().to_numpy(zero_copy_only=False) for c in cols}
            if not has:
                f["hit_subsystem"] = np.full(len(f["hit_x"]), SUBSYSTEM_IDS[PRE_V3_SUBSYSTEM], np.int8)
            parts.append({"r": np.hypot(f["hit_x"].astype(np.float64), f["hit_y"].astype(np.float64)),
                          "subsystem": f["hit_subsystem"], "pid_class": f["hit_pid_class"],
                          "noise": f["hit_noise"].astype(bool)})
            if max_events is not None and n >= max_events:
                break
        if max_events is not None and n >= max_events:
            break
    keys = ("r", "subsystem", "pid_class", "noise")
    return n, {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in keys}


def subsystem_numbers(n_events: int, h: dict) -> dict:
    """Per subsystem name: hits, hits per event, hits per layer (by layer radius), the PID-class
    fractions and the noise fraction of its hits."""
    out = {}
    for sid in np.unique(h["subsystem"]).astype(int).tolist():
        sel = h["subsystem"] == sid
        r = np.sort(h["r"][sel])
        layer = np.concatenate([[0], np.cumsum(np.diff(r) > LAYER_GAP_CM)])
        per_layer = np.bincount(layer)
        radii = np.bincount(layer, weights=r) / per_layer
        cls = h["pid_class"][sel]
        out[SUBSYSTEMS.get(sid, str(sid))] = {
            "hits": int(sel.sum()),
            "hits_per_event": float(sel.sum() / max(n_events, 1)),
            "layers": {"r_cm": [round(float(r), 3) for r in radii], "hits": per_layer.astype(int).tolist()},
            "pid_class_hit_fractions": {name: float(np.mean(cls == k)) for k, name in PID_CLASSES.items()},
            "noise_hit_fraction": float(h["noise"][sel].mean()),
        }
    return out


def _subsystems(numbers: dict, n_events: int, out: Path, figures: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, d in numbers.items():
        ax[0].plot(d["layers"]["r_cm"], np.asarray(d["layers"]["hits"]) / max(n_events, 1), "o-", ms=3,
                   label=f"{name} ({len(d['layers']['r_cm'])} layers)")
    ax[0].set(xlabel="layer radius [cm]", ylabel="hits per layer per event", yscale="log",
              title="hits per layer, by subsystem")
    ax[0].legend(fontsize=8)
    names = list(numbers)
    bottom = np.zeros(len(names))
    for k, cls in PID_CLASSES.items():
        f = np.array([numbers[n]["pid_class_hit_fractions"][cls] for n in names])
        ax[1].bar(names, f, bottom=bottom, label=cls)
        bottom += f
    for i, n in enumerate(names):
        ax[1].text(i, 1.01, f"noise {numbers[n]['noise_hit_fraction']:.3f}", ha="center", fontsize=8)
    ax[1].set(ylabel="fraction of the subsystem's hits", ylim=(0, 1.1), title="PID class mix per subsystem")
    ax[1].legend(fontsize=8, loc="lower right")
    _save(fig, out, "subsystems.png", figures)


def make_report(path_or_dir: str | Path, out: str | Path, *, max_events: int | None = None,
                display_event: int = 0) -> dict:
    """Draw the report figures into ``out`` and write ``out/report.json``; returns its content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = collect(path_or_dir, max_events)
    if c.n_events == 0:
        raise DataError(Problem(str(path_or_dir), "no events to report on"))
    figures: list[str] = []
    _per_event(c, out, figures)
    _hit_positions(c, out, figures)
    _tracks(c, out, figures)
    _dedx(c, out, figures)
    _classes(c, out, figures)
    _hits_per_track(c, out, figures)
    _event_display(path_or_dir, display_event, out, figures)
    numbers = summary_from(c)
    numbers["subsystems"] = subsystem_numbers(*_subsystem_hits(path_or_dir, max_events))
    _subsystems(numbers["subsystems"], c.n_events, out, figures)
    result = {
        "dataset": str(Path(path_or_dir).resolve()),
        "numbers": numbers,
        "expectations": {k: v for k, v in EXPECTATIONS.items() if k in numbers},
        "figures": figures,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return result
