from pathlib import Path

from pgaasctl.spec.reference import reference_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_page_matches_the_models() -> None:
    assert PAGE.read_text() == reference_markdown(), (
        "docs/reference.md is out of date: run .venv/bin/python -m pgaasctl.spec.reference > docs/reference.md"
    )


def test_every_field_is_documented() -> None:
    undocumented = [line for line in reference_markdown().splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert undocumented == []


def test_example_specs_validate() -> None:
    from pgaasctl.spec.desired import load_desired

    desired = load_desired(Path(__file__).resolve().parents[2] / "specs" / "examples")
    assert set(desired.pairs) == {"orders"}
    assert set(desired.pairs["orders"].roles) == {"orders_app", "reporting"}
