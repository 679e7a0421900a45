"""Metrics on hand-built partitions whose answers are worked out by hand."""

import numpy as np
import pytest

from fm4npp.metrics.classification import NOISE_NAMES, PID_NAMES, classification_metrics
from fm4npp.metrics.tracking import match_event, particle_kinematics, tracking_metrics


def test_perfect_partition_any_label_names():
    t = [np.array([3, 3, 3, 8, 8, 9])]
    p = [np.array([0, 0, 0, 5, 5, 1])]
    m = tracking_metrics(t, p)
    assert m["ari_event_mean"] == 1.0 and m["ari_pooled"] == 1.0
    assert m["efficiency"] == m["purity"] == 1.0
    assert m["spacepoint_efficiency"] == m["spacepoint_purity"] == 1.0


def test_double_majority_by_hand():
    # particle A: 4 hits, B: 2 hits, C: 3 hits
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    # reco X = {A,A,A,B}: 3/4 > .5 of X and 3/4 > .5 of A -> match A
    # reco Y = {A,B}: 1/2 is not > .5 -> no match; B is 1/2 in X and 1/2 in Y -> unmatched
    # reco Z = {C,C,C}: match C
    pred = np.array([7, 7, 7, 5, 7, 5, 9, 9, 9])
    m = tracking_metrics([truth], [pred])
    assert m["n_true_tracks"] == 3 and m["n_true_matched"] == 2
    assert m["efficiency"] == pytest.approx(2 / 3)
    assert m["n_reco_tracks"] == 3 and m["n_reco_matched"] == 2
    assert m["purity"] == pytest.approx(2 / 3)
    # spacepoint efficiency: A best 3, B best 1, C best 3 -> 7/9; purity: X 3, Y 1, Z 3 -> 7/9
    assert m["spacepoint_efficiency"] == pytest.approx(7 / 9)
    assert m["spacepoint_purity"] == pytest.approx(7 / 9)
    from sklearn.metrics import adjusted_rand_score

    assert m["ari_event_mean"] == pytest.approx(adjusted_rand_score(truth, pred))


def test_exactly_half_is_not_a_majority():
    m = match_event(np.array([0, 0, 1, 1]), np.array([4, 4, 4, 4]))
    assert not m.particle_matched.any() and not m.reco_matched.any()


def test_pooled_efficiency_counts_tracks_not_events():
    # event 1: 1 track found of 1; event 2: 0 found of 3 -> pooled 1/4, not mean(1, 0) = .5
    t = [np.array([0, 0]), np.array([0, 0, 1, 1, 2, 2])]
    p = [np.array([1, 1]), np.array([0, 1, 0, 1, 0, 1])]
    m = tracking_metrics(t, p)
    assert m["efficiency"] == pytest.approx(0.25)
    assert m["n_events"] == 2


def test_padding_dropped_and_noise_policies():
    truth = np.array([0, 0, 0, 1, 1, 5, -1, -1])
    noise = np.array([0, 0, 0, 0, 0, 1, 0, 0], bool)
    # the noise point (truth 5) was put into track 1's prediction; padding has junk labels
    pred = np.array([2, 2, 2, 3, 3, 3, 2, 3])
    ex = tracking_metrics([truth], [pred], [noise], noise_policy="exclude")
    assert ex["efficiency"] == ex["purity"] == 1.0 and ex["ari_event_mean"] == 1.0
    assert ex["n_true_tracks"] == 2  # noise is never a truth track
    ct = tracking_metrics([truth], [pred], [noise], noise_policy="count")
    assert ct["n_true_tracks"] == 2
    # noise costs spacepoint purity: reco 3 holds 2 of particle 1 + 1 noise -> (3+2)/6
    assert ct["spacepoint_purity"] == pytest.approx(5 / 6)
    assert ct["purity"] == 1.0  # 2/3 is still a majority
    assert ct["ari_event_mean"] < 1.0


def test_unassigned_points_are_in_no_track():
    m = match_event(np.array([0, 0, 0, 1]), np.array([-1, -1, 4, 4]))
    assert m.reco_hits.tolist() == [2]
    assert not m.particle_matched[0]  # only 1 of its 3 hits in a track


def test_min_hits_selection():
    truth = [np.array([0] * 25 + [1] * 25 + [2] * 5)]
    # track 1 split 10/15 (15/25 > .5, 15/15 > .5 -> matched); track 2 (5 hits) split 2/3 -> lost
    pred = [np.array([0] * 25 + [1] * 10 + [2] * 15 + [3] * 2 + [4] * 3)]
    assert tracking_metrics(truth, pred)["efficiency"] == pytest.approx(3 / 3)
    pred[0][-5:] = [3, 3, 4, 4, 5]
    assert tracking_metrics(truth, pred)["efficiency"] == pytest.approx(2 / 3)
    m = tracking_metrics(truth, pred, min_hits=10)
    assert m["n_true_tracks"] == 2 and m["efficiency"] == 1.0


def test_restricted_selection_values():
    truth = [np.array([0] * 25 + [1] * 25 + [2] * 30 + [3] * 5)]
    pred = [np.array([0] * 25 + [1] * 12 + [2] * 13 + [3] * 30 + [4] * 5)]
    # track 0: pT 2, eta .2 -> selected, matched; track 1: selected, split 12/13 -> 13 > 12.5
    # matched; track 2: pT .5 -> not selected; track 3: 5 hits -> not selected
    kin = [{0: (2.0, 0.2), 1: (3.0, -0.5), 2: (0.5, 0.1), 3: (4.0, 0.0)}]
    m = tracking_metrics(truth, pred, kinematics=kin)
    assert m["n_restricted_tracks"] == 2 and m["restricted_efficiency"] == 1.0
    kin[0][1] = (3.0, 1.2)  # |eta| > 1.1 drops it
    assert tracking_metrics(truth, pred, kinematics=kin)["n_restricted_tracks"] == 1
    with pytest.raises(KeyError, match="track_id 3"):
        tracking_metrics(truth, pred, kinematics=[{0: (1, 0), 1: (1, 0), 2: (1, 0)}])


def test_particle_kinematics():
    k = particle_kinematics([{"track_id": 4, "px": 3.0, "py": 4.0, "pz": 0.0}])
    assert k[4][0] == pytest.approx(5.0) and k[4][1] == pytest.approx(0.0)


def test_bad_input_lengths():
    with pytest.raises(ValueError, match="points"):
        tracking_metrics([np.array([0, 1])], [np.array([0])])


def test_classification_by_hand():
    t = np.array([0, 0, 0, 1, 1, 2, -1, -1])
    p = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    m = classification_metrics(t, p, ["a", "b", "c"])
    assert m["n_points"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recall a 2/3, b 2/2, c 0/1; precision a 2/2, b 2/4, c 0 (never predicted)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["per_class"]["c"] == {"recall": 0.0, "precision": 0.0, "support": 1, "predicted": 0}


def test_classification_lists_and_names():
    m = classification_metrics([np.array([1, 0]), np.array([1])], [np.array([1, 0]), np.array([0])], NOISE_NAMES)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert set(m["per_class"]) == set(NOISE_NAMES) and len(PID_NAMES) == 5
    with pytest.raises(ValueError, match="labels outside"):
        classification_metrics(np.array([0, 7]), np.array([0, 0]), NOISE_NAMES)
