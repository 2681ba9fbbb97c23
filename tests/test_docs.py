"""The README's line-spec reference is the one generated from the schema."""

from __future__ import annotations

from taktline.envs.spec_reference import spec_reference_markdown
from tests.conftest import REPO

START, END = "<!-- spec-reference:start -->", "<!-- spec-reference:end -->"


def test_readme_spec_reference_matches_the_schema() -> None:
    text = (REPO / "README.md").read_text()
    body = text.split(START)[1].split(END)[0].strip()
    assert body == spec_reference_markdown().strip(), (
        "README line-spec reference is stale: run "
        "`python -m taktline.envs.spec_reference --write README.md`"
    )
