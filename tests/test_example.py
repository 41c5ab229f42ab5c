import pytest

from guardtune.data.example import Example, FieldError, categorise, split_categories, to_binary


def test_none_means_unlabelled_and_round_trips():
    ex = Example(prompt="hi", prompt_harmful=None, prompt_categories=None, language="de")
    back = Example.from_dict(ex.to_dict())
    assert back == ex
    assert back.prompt_harmful is None and back.prompt_categories is None


def test_round_trip_with_every_field():
    ex = Example(prompt="you idiot", response="no", prompt_harmful=1, response_harmful=0, response_refusal=1,
                 prompt_categories=("S10",), response_categories=(), language="en", rationale=((4, 9),),
                 rewrite="you", source="x", id="1", group="g", meta={"k": 1})
    assert Example.from_dict(ex.to_dict()) == ex
    assert ex.to_dict()["rationale"] == [[4, 9]]


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": "  "}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "prompt_harmful": 2}, "prompt_harmful"),
    ({"prompt": "x", "prompt_harmful": True}, "prompt_harmful"),
    ({"prompt": "x", "response_harmful": 1}, "response_harmful"),
    ({"prompt": "x", "language": "English"}, "language"),
    ({"prompt": "x", "rationale": ((0, 5),)}, "rationale"),
    ({"prompt": "x", "prompt_categories": ("",)}, "prompt_categories"),
])
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(FieldError) as err:
        Example(**kwargs)
    assert err.value.field == field


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(FieldError, match="unknown field") as err:
        Example.from_dict({"prompt": "x", "harmful": 1})
    assert err.value.field == "harmful"


@pytest.mark.parametrize("raw, expected", [
    (0, 0), (1, 1), (True, 1), ("0", 0), ("1.0", 1), ("true", 1), ("False", 0), (None, None), ("", None),
    (float("nan"), None), ("harmful", 1),
])
def test_to_binary(raw, expected):
    assert to_binary("f", raw, {"harmful": 1}) == expected


def test_to_binary_unknown_value_lists_choices():
    with pytest.raises(FieldError, match="unknown label value 'maybe'.*'yes'"):
        to_binary("label", "maybe", {"yes": 1})


def test_category_cells():
    assert split_categories("S1, S10;S2") == ["S1", "S10", "S2"]
    assert split_categories("") is None
    assert split_categories("[]") == [] and split_categories("none") == []
    assert split_categories(None) is None
    assert categorise("c", "S10,S1", "canonical") == ("S1", "S10")
    with pytest.raises(FieldError, match="unknown canonical category 'S15'"):
        categorise("c", "S15", "canonical")
