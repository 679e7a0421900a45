"""One KEY=VALUE reader for every --set: the same strings mean the same values everywhere."""

import pytest

from fm4npp.overrides import coerce, parse_pairs


def test_pairs_and_types():
    assert parse_pairs(["lr = 1e-3", "order=radial", "tag=a=b"]) == {
        "lr": "1e-3", "order": "radial", "tag": "a=b"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_pairs(["lr"])
    assert coerce("lr", "1e-3", float) == 1e-3 and coerce("steps", "7", int) == 7
    assert coerce("steps", 7, float) == 7.0 and isinstance(coerce("x", 7, float), float)
    with pytest.raises(ValueError, match="'steps'.*'seven'"):
        coerce("steps", "seven", int)
    with pytest.raises(ValueError, match="expected int"):
        coerce("steps", True, int)


@pytest.mark.parametrize("text,value", [("true", True), ("On", True), ("1", True),
                                        ("no", False), ("FALSE", False), ("0", False)])
def test_booleans_agree_between_pretraining_and_finetuning(text, value):
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.pretrain.config import PretrainConfig

    assert coerce("b", text, bool) is value
    assert PretrainConfig.from_dict({"difficulty_weighting": text}).difficulty_weighting is value
    assert FinetuneConfig(source="raw").with_overrides([f"fm_with_raw={text}"]).fm_with_raw is value


def test_a_word_that_is_not_a_boolean_is_refused_everywhere():
    from fm4npp.downstream.config import FinetuneConfig
    from fm4npp.pretrain.config import PretrainConfig

    for bad in ("maybe", "2", "treu"):
        with pytest.raises(ValueError, match="cannot read"):
            PretrainConfig.from_dict({"difficulty_weighting": bad})
        with pytest.raises(ValueError, match="cannot read"):
            FinetuneConfig(source="raw").with_overrides([f"fm_with_raw={bad}"])
