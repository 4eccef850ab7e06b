"""Pathways are a function of the set of events: corrections apply in revision order."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from consumers.pathways import StoredEventRow, effective_content, project_stay


def _row(revision: int, correction: str, **payload: object) -> StoredEventRow:
    return StoredEventRow(
        event_id=f"e{revision}",
        revision=revision,
        record_key="r1",
        correction=correction,
        event_type="kad.admission",
        payload={"event_type": "kad.admission", **payload},
    )


ORIGINAL = _row(1, "original", admission_diagnoses=["R74"], ward="A")
REPLACE = _row(2, "replace", admission_diagnoses=["J189"], ward="B")
SUPPLEMENT = _row(3, "supplement", admission_diagnoses=["R05"], ward=None)
CANCEL = _row(4, "cancel")


def test_replace_swaps_and_supplement_adds() -> None:
    """Revision 2 replaces the content; revision 3 adds a diagnosis and keeps the rest."""
    content = effective_content([ORIGINAL, REPLACE, SUPPLEMENT])
    assert content is not None
    assert content["admission_diagnoses"] == ["J189", "R05"]
    assert content["ward"] == "B"


def test_a_cancel_removes_the_record() -> None:
    """A cancelled record has no effective content."""
    assert effective_content([ORIGINAL, REPLACE, CANCEL]) is None


def test_corrections_without_their_original_wait() -> None:
    """A correction that arrives before its original does not create a record."""
    assert effective_content([REPLACE, SUPPLEMENT]) is None


@given(st.permutations([ORIGINAL, REPLACE, SUPPLEMENT]), st.integers(0, 3))
def test_the_result_does_not_depend_on_arrival_order(
    rows: list[StoredEventRow], duplicated: int
) -> None:
    """Any order, with any row delivered twice, gives the same effective content."""
    arrived = rows + rows[:duplicated]
    assert effective_content(arrived) == effective_content([ORIGINAL, REPLACE, SUPPLEMENT])


def test_a_stay_joins_its_two_sides_and_measures_its_length() -> None:
    """Admission + discharge make one complete stay with its length in hours."""
    person = {"person_key": "p1-x"}
    admission = {
        "person": person,
        "admitted_at": "2024-03-01T10:00:00Z",
        "service_municipalities": ["0301"],
        "admission_diagnoses": ["R74"],
    }
    discharge = {
        "person": person,
        "discharged_at": "2024-03-03T16:00:00+00:00",
        "discharge_diagnoses": ["J06"],
    }
    stay = project_stay("310000000", "s1", admission, discharge)
    assert stay is not None
    assert stay.complete
    assert stay.length_of_stay_hours == 54.0
    assert stay.admitted_at == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert stay.municipality == "0301"


def test_a_discharge_alone_is_an_incomplete_stay() -> None:
    """A discharge that arrives first is kept and shown as incomplete."""
    stay = project_stay(
        "310000000",
        "s1",
        None,
        {"person": {"person_key": "p"}, "discharged_at": "2024-03-03T16:00:00Z"},
    )
    assert stay is not None
    assert not stay.complete
    assert stay.length_of_stay_hours is None
