"""Fine-tuning: a copy moves toward the lab's labels, the base stays as it was."""

from __future__ import annotations

import numpy as np
import torch

from classifier import evaluate
from classifier.finetune import finetune


def test_finetune_moves_toward_the_labels_and_leaves_the_base_alone(shipped, small_set):
    base = shipped.model
    # "lab" events: 24 synthetic events whose labels the base model gets least right
    p = evaluate.predict(base, small_set)["p"]
    worst = np.argsort(-np.abs(p - small_set.is_ctc))[:24]
    lab = small_set.subset(worst)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = finetune(base, lab, seed=0, replay=small_set, steps=30)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), k
    err = lambda m: np.abs(evaluate.predict(m, lab)["p"] - lab.is_ctc).mean()  # noqa: E731
    assert err(tuned) < err(base)
    # only the top moves: the CNN is frozen
    assert torch.equal(tuned.spatial.stages[1][0].weight, base.spatial.stages[1][0].weight)
    again = finetune(base, lab, seed=0, replay=small_set, steps=30)
    assert np.array_equal(evaluate.predict(tuned, lab)["p"], evaluate.predict(again, lab)["p"])
