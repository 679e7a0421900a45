"""fm4npp.model.schedule.warmup_cosine gives exactly the lrs of the three copies it replaced."""

import math

import pytest

from fm4npp.model.schedule import warmup_cosine


def _old_pretrain(step, warmup, total, min_ratio=0.0):  # pretrain/loop.py:lr_lambda
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _old_mup(warmup_steps, total_steps, final_ratio=0.0):  # model/mup.py:warmup_cosine
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


def _old_finetune(s, warm, total):  # downstream/fit.py's LambdaLR lambda
    return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))


@pytest.mark.parametrize("warmup,total,min_ratio", [(10, 100, 0.0), (10, 100, 0.1), (1, 7, 0.0),
                                                    (3, 3, 0.05), (1000, 10_000, 0.0)])
def test_pretraining_schedule_is_bit_identical(warmup, total, min_ratio):
    steps = {0, warmup // 2, warmup - 1, warmup, (warmup + total) // 2, total - 1, total, total + 5}
    for s in sorted(steps):
        assert warmup_cosine(s, warmup, total, min_ratio) == _old_pretrain(s, warmup, total, min_ratio)
        assert warmup_cosine(s, warmup, total, min_ratio) == _old_mup(warmup, total, min_ratio)(s)


@pytest.mark.parametrize("warm,total", [(1, 5), (5, 100), (300, 6000), (2, 2)])
def test_finetuning_schedule_is_bit_identical(warm, total):
    for s in sorted({0, warm // 2, warm - 1, warm, total // 2, total - 1, total, total + 3}):
        assert warmup_cosine(s, warm, total, decay_during_warmup=True) == _old_finetune(s, warm, total)


def test_shape():
    lam = [warmup_cosine(s, 10, 100, 0.1) for s in range(101)]
    assert lam[0] == pytest.approx(0.1) and lam[9] == lam[10] == 1.0 and lam[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lam[10:], lam[11:]))
    ft = [warmup_cosine(s, 5, 100, decay_during_warmup=True) for s in range(101)]
    assert ft[4] < 1.0 and ft[100] == 0.0 and max(ft) == ft[4]
