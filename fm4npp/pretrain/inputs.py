"""What a pretraining run reads: its data set (or the components of a data mixture,
fm4npp.data.mixture) and their serialization bins, checked before any Ray work.

A run on one data set is a mixture of one unnamed component (its ``data`` and ``bins``), so
every check below runs once per component; a component's messages start with its name.
"""

from __future__ import annotations

from pathlib import Path

from fm4npp.data import mixture
from fm4npp.data.shards import MANIFEST
from fm4npp.pretrain.config import PretrainConfig


class RefusedError(ValueError):
    """A run that must not start (missing bins, bins differing from the checkpoint's)."""


def components(cfg: PretrainConfig) -> list[mixture.Component]:
    """The data sets of a resolved config, in the spec's order."""
    if mixture.is_mixture(cfg.data):
        return mixture.parse_spec(cfg.data)
    return [mixture.Component("", cfg.data, 1.0, 1.0, 0, cfg.bins)]


def _who(c: mixture.Component) -> str:
    return f"mixture component {c.name!r}: " if c.name else ""


def load_bins(cfg: PretrainConfig) -> list:
    """Each component's bins (refuses, RefusedError, when one has none or they cannot be
    mixed)."""
    from fm4npp.serialize import bins as bins_mod

    out, comps = [], components(cfg)
    for c in comps:
        path = c.bins_path
        if not path.is_file():
            raise RefusedError(
                f"{_who(c)}no serialization bins at {path}: the data in {c.path} cannot be serialized "
                f"without them; fit them with `fm4npp serialize fit {c.path} --out {path}`"
                + ("" if c.name else " or pass --set bins=PATH"))
        try:
            out.append(bins_mod.load_bins(path))
        except ValueError as exc:
            raise RefusedError(f"{_who(c)}unusable serialization bins {path}: {exc}") from exc
    try:
        mixture.check_same_serialization(comps, out)
    except mixture.MixtureError as exc:
        raise RefusedError(str(exc)) from None
    return out


def mixture_record(cfg: PretrainConfig) -> list[dict] | None:
    """The run's mixture (name, path, weight, bins hash, detector of each component); None for
    a run on one data set."""
    return mixture.record(components(cfg), load_bins(cfg)) if mixture.is_mixture(cfg.data) else None


def bins_sources(cfg: PretrainConfig) -> list[str]:
    """The data sets the run's bins were fitted on (each bins file's fit source: name + manifest
    digest; "" for bins fitted from bare events): the downstream tells the backbone's own data
    sets from others by them (fm4npp.downstream.splits.serialization)."""
    return [str(b.content.get("fit", {}).get("source", "")) for b in load_bins(cfg)]


def bins_hash(cfg: PretrainConfig) -> str:
    """Hash of the run's serialization bins (for a mixture: one over all components');
    refuses (RefusedError) when there are none."""
    rec = mixture_record(cfg)
    return mixture.record_hash(rec) if rec else load_bins(cfg)[0].hash


_VALIDATED: dict[tuple[str, str], tuple] = {}  # (data, bins) -> file stats when they passed


def check_inputs(cfg: PretrainConfig, skip_validation: bool = False) -> None:
    """Refuse bad inputs of a resolved config before any Ray work: a missing data directory
    or bins (RefusedError), any problem ``fm4npp data validate`` would list (DataError: file,
    row, problem), bins fitted on another data set (RefusedError); for a mixture, every
    component, and bins fitted for another detector than the component's manifest names.
    ``skip_validation`` keeps only the checks without which training cannot start. A check
    that passed is remembered until a file changes, so the CLI and run_pretraining both
    calling it costs one validation."""
    from fm4npp.data.validate import check_dataset

    comps = components(cfg)
    for c in comps:
        data = Path(c.path)
        if not data.is_dir():
            what = "is not a directory" if data.exists() else "does not exist"
            raise RefusedError(f"{_who(c)}data directory {data} {what}")
    bins_list = load_bins(cfg)
    if skip_validation:
        return
    for c, b in zip(comps, bins_list):
        key, stats = (c.path, str(c.bins_path)), _file_stats(c)
        if _VALIDATED.get(key) == stats:
            continue
        check_dataset(Path(c.path))
        _check_bins_source(c, b)
        if c.name:
            _check_detector(c, b)
        _VALIDATED[key] = stats


def _file_stats(c: mixture.Component) -> tuple:
    data = Path(c.path)
    paths = [c.bins_path, data / MANIFEST, *sorted(data.glob("*.parquet"))]
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in paths if p.exists() for st in [p.stat()])


def _check_bins_source(c: mixture.Component, bins) -> None:
    """Bins fitted from a directory record its manifest digest (fm4npp.serialize.bins); refuse
    them on a data set with another. Bins fitted on events in memory record none: accepted."""
    from fm4npp.serialize import bins as bins_mod

    source = str(bins.content.get("fit", {}).get("source", ""))
    fitted = source.partition(" manifest:")[2]
    here = bins_mod._source_id(c.path).partition(" manifest:")[2]
    if fitted and fitted != here:
        raise RefusedError(
            f"{_who(c)}serialization bins {c.bins_path} were fitted on another data set ({source!r}; "
            f"this one is manifest:{here}); refit them with `fm4npp serialize fit {c.path} --out "
            f"{c.bins_path}`" + ("" if c.name else " or pass --set bins=PATH"))


def _check_detector(c: mixture.Component, bins) -> None:
    """A component's coordinates are normalised for its detector: bins fitted for another
    detector than the one its manifest records would mis-scale every event."""
    from fm4npp.serialize.bins import dataset_detector, detector_name

    recorded, fitted = dataset_detector(c.path), bins.content["config"]["detector"]
    if recorded is not None and detector_name(fitted) != recorded:
        raise RefusedError(f"{_who(c)}bins {c.bins_path} were fitted for detector {fitted!r}, the data "
                           f"in {c.path} were simulated with {recorded!r}: refit with --detector {recorded}")
