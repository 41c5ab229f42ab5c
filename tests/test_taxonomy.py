import pytest

from guardtune import taxonomy
from guardtune.taxonomy import CODES, SCHEMES, UnknownCategory, canonical


def test_fourteen_codes():
    assert CODES == tuple(f"S{i}" for i in range(1, 15))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_mapping_targets_canonical_codes(scheme):
    for label, codes in SCHEMES[scheme].items():
        assert set(codes) <= set(CODES), (scheme, label)


def test_llama_guard_2_renumbering():
    # LG2 has no Defamation: its S5 Specialized Advice is S6 here, and its S11 Sexual Content is S12.
    assert canonical(["S5", "S11"], "llama_guard_2") == ["S6", "S12"]
    assert len(taxonomy.LLAMA_GUARD_2) == 11


def test_openai_short_and_long_names_agree():
    pairs = {"S": "sexual", "H": "hate", "V": "violence", "HR": "harassment", "SH": "self-harm",
             "S3": "sexual/minors", "H2": "hate/threatening", "V2": "violence/graphic"}
    for short, long in pairs.items():
        assert taxonomy.OPENAI[short] == taxonomy.OPENAI[long]


def test_beavertails_has_its_14_categories():
    assert len(taxonomy.BEAVERTAILS) == 14


def test_unmapped_labels_keep_their_own_name_after_codes():
    assert canonical(["Bullying & harassment", "Theft", "Violence & incitement"], "multijail") == [
        "S1", "S2", "Bullying & harassment"]


def test_unknown_label_is_an_error_listing_choices():
    with pytest.raises(UnknownCategory, match="known: .*hate"):
        canonical(["hateful"], "openai")
