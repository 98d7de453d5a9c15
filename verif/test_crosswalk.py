"""The generated crosswalk page `docs/units.md` (`verif.crosswalk`) is current."""

import pytest

from . import crosswalk


def test_units_page_is_current():
    assert crosswalk.PAGE.read_text() == crosswalk.markdown(), (
        "run `python -m verif.crosswalk` to regenerate docs/units.md")


def test_rows_must_share_their_columns():
    table = crosswalk.rows()
    table[1] = {**table[1], "extra": "x"}
    with pytest.raises(ValueError, match=r"crosswalk row columns must be \['unit', "):
        crosswalk.markdown(table)
