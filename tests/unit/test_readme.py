from scripts.settings_table import settings_table
from tests.media import ROOT


def test_readme_configuration_table_matches_settings() -> None:
    assert settings_table() in (ROOT / "README.md").read_text()
