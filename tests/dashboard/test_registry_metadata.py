"""What a classifier version's metadata says, read in one place (issue 12.8: ``patients.registry``,
moved out of the dashboard's views): the shapes the classifier, a lab's fine-tuning and older
hand-written reports store."""

from __future__ import annotations

from patients import registry

CLI = {  # python -m classifier train: one result per evaluation data set, the operating point
    "threshold": 0.163, "threshold_rule": "98% sensitivity on the synthetic validation split",
    "training_data": {"kind": "synthetic", "n": 20000, "split": {"train": 0.8}},
    "metrics": {
        "synthetic_test": {"n": 100, "accuracy": 0.97, "roc_auc": 0.99,
                           "confusion": {"tp": 47, "fp": 2, "tn": 50, "fn": 1}},
        "ctc-dev": {"n": 40, "acc": 0.9, "roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]}},
        "notes": "not a result",
    },
}


def test_the_classifiers_metadata():
    facts = registry.facts(CLI)
    assert (facts.threshold, facts.threshold_rule) == (0.163, "98% sensitivity on the synthetic validation split")
    assert facts.training == "kind: synthetic, n: 20000"  # nested values left out
    first, second = facts.evaluations
    assert (first["name"], first["n"], first["accuracy"], first["auc"]) == ("synthetic test", 100, 0.97, 0.99)
    assert first["confusion"] == [[50, 2], [1, 47]] and first["confusion_labels"] == ["Not CTC", "CTC"]
    assert (second["name"], second["accuracy"], second["roc"]) == ("ctc-dev", 0.9, ([0, 0.1, 1], [0, 0.9, 1]))
    assert "confusion" not in second


def test_flat_and_top_level_results_and_what_is_not_a_result():
    (flat,) = registry.evaluations({"metrics": {"auc": 0.9, "sensitivity": 0.8}})
    assert (flat["name"], flat["auc"], flat["sensitivity"], flat["accuracy"]) == ("evaluation", 0.9, 0.8, None)
    (top,) = registry.evaluations({"accuracy": 0.8, "confusion_matrix": [[5, 1, 0], [0, 4, 1], [1, 0, 6]]})
    assert top["confusion_labels"] == ["0", "1", "2"]
    assert registry.evaluations({"metrics": {"n": 10}}) == []  # a count alone is no evaluation
    assert registry.evaluations({"metrics": {"accuracy": "0.9"}}) == []  # numbers only


def test_a_missing_or_malformed_entry_reads_as_absent():
    empty = registry.facts(None)
    assert (empty.threshold, empty.threshold_rule, empty.training, empty.evaluations) == (None, "", "", [])
    assert registry.threshold({"threshold": "0.2"}) is None and registry.threshold({"threshold": 1}) == 1.0
    assert registry.facts({"training": "lab folder, 300 cells"}).training == "lab folder, 300 cells"
