"""The docs agree with the code: the generated pages are current, and the README stays a short front page."""

from devstack.media import ROOT
from scripts.gen_docs import CONFIGURATION_MD, generated_files
from scripts.settings_table import settings_table

README_MAX_BYTES = 12 * 1024


def test_configuration_page_table_matches_settings() -> None:
    assert settings_table() in CONFIGURATION_MD.read_text()


def test_generated_docs_are_current() -> None:
    """`make docs` (scripts/gen_docs.py) writes docs/openapi.json, api.md and configuration.md."""
    files = generated_files()
    stale = [str(path.relative_to(ROOT)) for path, text in files.items() if path.read_text() != text]
    assert not stale, f"stale, run `make docs` (or python -m scripts.gen_docs): {stale}"


def test_readme_is_short_and_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_MAX_BYTES
    for page in ("api", "clips", "configuration", "benchmarks", "robustness", "deployment"):
        assert f"docs/{page}.md" in readme
        assert (ROOT / "docs" / f"{page}.md").exists()
