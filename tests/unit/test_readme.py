from devstack.media import ROOT
from scripts.settings_table import settings_table


def test_readme_configuration_table_matches_settings() -> None:
    assert settings_table() in (ROOT / "README.md").read_text()
