"""Print the README's configuration table from `service.config.Settings` (tests check they agree)."""

from __future__ import annotations

from service.config import Settings


def settings_table() -> str:
    rows = ["| Environment variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default).replace("|", "\\|")
        rows.append(f"| `FER_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
