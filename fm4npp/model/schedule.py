"""The learning-rate schedule of pretraining and finetuning: linear warmup, cosine decay.

It lives in the model layer so that pretrain and downstream both import it downward.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0, *,
                  decay_during_warmup: bool = False) -> float:
    """Multiplier of the peak lr at ``step`` (for LambdaLR): linear warmup over ``warmup`` steps
    to 1, cosine decay to ``min_ratio`` at ``total``, flat after it.

    By default (pretraining, the paper's schedule) the cosine starts where the warmup ends.
    ``decay_during_warmup=True`` is finetuning's variant: the cosine runs over all ``total``
    steps from step 0 and the warmup ramp multiplies it; it is kept because adapters trained
    with it must be reproducible.
    """
    if decay_during_warmup:
        # the operand order is that of the formula adapters were trained with: bit-identical lrs
        angle = math.pi * min(step, total) / total
        ramp = min(1.0, (step + 1) / warmup)
    else:
        if step < warmup:
            return (step + 1) / warmup
        angle = math.pi * min(1.0, (step - warmup) / max(1, total - warmup))
        ramp = 1.0
    return ramp * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(angle)))
