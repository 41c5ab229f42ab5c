"""Every metric on cases computed by hand, including the traps published studies fall into."""

from __future__ import annotations

import numpy as np
import pytest

from guardtune import metrics

Y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])


def test_binary_at_a_threshold_by_hand():
    m = metrics.binary(Y, P, 0.5)
    # predicted positive: 0.9 (tp), 0.6 (tp), 0.7 (fp); missed: 0.3 (fn); tn: 4
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 4, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 5) and m["fnr"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["mcc"] == pytest.approx((2 * 4 - 1 * 1) / np.sqrt(3 * 3 * 5 * 5))


def test_positive_class_f1_is_not_macro_f1():
    # 9 negatives all right, 1 positive missed: positive-class F1 is 0, macro-F1 looks like a decent 0.47
    y = np.array([1] + [0] * 9)
    p = np.array([0.1] + [0.2] * 9)
    m = metrics.binary(y, p)
    assert m["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0 + 2 * 9 / (2 * 9 + 1)) / 2)


def test_rank_metrics_by_hand_and_ties_are_one_threshold():
    # ranking: 0.9(+) 0.7(-) 0.6(+) 0.4(-) 0.3(+) ...: AP = mean of precision at each positive = (1 + 2/3 + 3/5)/3
    m = metrics.binary(Y, P)
    assert m["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    pairs = sum(p > n for p in P[Y == 1] for n in P[Y == 0])
    assert m["roc_auc"] == pytest.approx(pairs / 15)
    # all scores tied: one threshold, precision = base rate, whatever the row order
    tied = metrics.binary(np.array([1, 0, 0, 1]), np.array([0.5] * 4))
    flipped = metrics.binary(np.array([0, 1, 1, 0]), np.array([0.5] * 4))
    assert tied["auprc"] == flipped["auprc"] == pytest.approx(0.5)
    assert tied["roc_auc"] == pytest.approx(0.5)


def test_recall_at_fixed_fpr():
    # with FPR <= 0 allowed: only scores above the highest negative (0.7): recall 1/3; at 1/5 FPR: 2/3
    assert metrics.recall_at_fpr(Y, P, 0.0) == pytest.approx(1 / 3)
    assert metrics.recall_at_fpr(Y, P, 0.2) == pytest.approx(2 / 3)
    assert metrics.binary(Y, P)["recall_at_5pct_fpr"] == pytest.approx(1 / 3)


def test_positives_only_reports_recall_and_says_why():
    m = metrics.binary(np.array([1, 1, 1, 1]), np.array([0.9, 0.8, 0.2, 0.6]))
    assert m["recall"] == pytest.approx(0.75)
    assert m["precision"] is None and m["auprc"] is None and m["fpr"] is None and m["f1"] is None
    assert "positives only" in m["note"]


def test_jaccard_per_sample_with_the_empty_set_convention():
    assert metrics.jaccard(set(), set()) == 1.0
    assert metrics.jaccard({"S1"}, set()) == 0.0
    assert metrics.jaccard({"S1", "S2"}, {"S2", "S3"}) == pytest.approx(1 / 3)
    true = [{"S1"}, set(), {"S1", "S2"}]
    prob = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3]])
    m = metrics.categories(true, prob, ["S1", "S2"])
    # per sample: 1, 1 (both empty), 1/2 -> mean 5/6; averaging per column instead would give a different number
    assert m["jaccard"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["exact_match"] == pytest.approx(2 / 3)
    # cells: S1 tp 2; S2 fn 1 -> micro F1 = 4 / (4 + 1); macro over categories with support: (1 + 0) / 2
    assert m["micro_f1"] == pytest.approx(4 / 5)
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["per_category"]["S1"]["recall"] == 1.0 and m["per_category"]["S2"]["recall"] == 0.0
    # a true category the guard cannot predict still counts against Jaccard
    assert metrics.categories([{"S9"}], np.array([[0.1, 0.1]]), ["S1", "S2"])["jaccard"] == 0.0


def test_bootstrap_intervals_match_sklearn_on_the_same_resamples():
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.round(np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1), 2)  # rounded: ties
    ci = metrics.bootstrap_binary(y, p, 0.5, n=200, seed=1)
    assert ci == metrics.bootstrap_binary(y, p, 0.5, n=200, seed=1)  # seeded
    W = metrics.resample_weights(len(y), 200, 1)  # the same draws, as row counts
    reference = {"auprc": [average_precision_score(y, p, sample_weight=w) for w in W],
                 "roc_auc": [roc_auc_score(y, p, sample_weight=w) for w in W],
                 "f1": [f1_score(y, p >= 0.5, sample_weight=w) for w in W]}
    for key, values in reference.items():
        assert ci[key] == pytest.approx((np.percentile(values, 2.5), np.percentile(values, 97.5)), abs=1e-9)
    point = metrics.binary(y, p)
    assert ci["auprc"][0] < point["auprc"] < ci["auprc"][1] and ci["auprc"][1] - ci["auprc"][0] < 0.2


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.clip(y * 0.5 + rng.random(300) * 0.5, 0, 1)
    noise = rng.random(300)
    better = metrics.paired_bootstrap(metrics.roc_auc_draws, y, noise, good, n=300, seed=0)
    from sklearn.metrics import roc_auc_score

    assert better["a"] == pytest.approx(roc_auc_score(y, noise)) and better["b"] == pytest.approx(roc_auc_score(y, good))
    assert better["difference"] > 0.3 and better["p_value"] < 0.01 and better["ci"][0] > 0
    same = metrics.paired_bootstrap(metrics.roc_auc_draws, y, good, good.copy(), n=300, seed=0)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_clusters_of_shares_a_cluster_per_group_and_keeps_ungrouped_rows_apart():
    assert metrics.clusters_of(["a", "b", "a", "", "", "b"]).tolist() == [0, 1, 0, 2, 3, 1]


def test_a_cluster_bootstrap_resamples_whole_groups():
    """Each draw gives every row of a group its group's count, and the counts are a resample of the groups."""
    clusters = metrics.clusters_of(["t0", "t0", "t1", "t2", "t2", "t2"])
    W = metrics.resample_weights(6, 300, seed=3, clusters=clusters)
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 3] == W[:, 4]).all() and (W[:, 4] == W[:, 5]).all()
    assert (W[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three groups drawn per resample
    assert np.array_equal(np.concatenate(list(metrics.weight_chunks(6, 300, 3, clusters))), W)
    singletons = metrics.clusters_of([f"r{i}" for i in range(6)])  # a group per row is the row bootstrap
    assert np.array_equal(metrics.resample_weights(6, 50, 9, singletons), metrics.resample_weights(6, 50, 9))


def test_copies_of_a_row_do_not_narrow_a_cluster_interval():
    """Forty rows, each copied ten times: resampling the copies as rows makes the interval about sqrt(10)
    narrower than the forty rows warrant; resampling them as groups gives exactly the forty rows' interval
    (the counts are the same draws, and AUPRC does not change when every weight is multiplied by ten)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    p = np.clip(y * 0.3 + rng.random(40) * 0.7, 0, 1)
    y10, p10 = np.repeat(y, 10), np.repeat(p, 10)
    groups = np.repeat([f"t{i}" for i in range(40)], 10)
    distinct = metrics.bootstrap_binary(y, p, 0.5, n=400, seed=5)["auprc"]
    as_groups = metrics.bootstrap_binary(y10, p10, 0.5, n=400, seed=5, clusters=metrics.clusters_of(groups))["auprc"]
    as_rows = metrics.bootstrap_binary(y10, p10, 0.5, n=400, seed=5)["auprc"]
    assert as_groups == pytest.approx(distinct, abs=1e-12)
    assert (as_rows[1] - as_rows[0]) < 0.6 * (as_groups[1] - as_groups[0])
    W = metrics.resample_weights(40, 400, 5)  # the reference: sklearn on the same draws of the forty rows
    reference = [average_precision_score(y, p, sample_weight=w) for w in W if 0 < (w * y).sum() < w.sum()]
    assert as_groups == pytest.approx((np.percentile(reference, 2.5), np.percentile(reference, 97.5)), abs=1e-9)
    other = np.repeat(rng.random(40), 10)
    by_group = metrics.paired_bootstrap(metrics.auprc_draws, y10, p10, other, n=400, seed=5,
                                        clusters=metrics.clusters_of(groups))
    by_row = metrics.paired_bootstrap(metrics.auprc_draws, y10, p10, other, n=400, seed=5)
    assert by_group["difference"] == by_row["difference"] and by_group["resamples"] == 400
    assert (by_group["ci"][1] - by_group["ci"][0]) > 1.5 * (by_row["ci"][1] - by_row["ci"][0])
