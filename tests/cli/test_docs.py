"""The documentation and examples stay in step with the configuration schema."""

from pathlib import Path

import pytest

from dtda import config

ROOT = Path(__file__).resolve().parents[2]


def test_every_config_key_is_documented():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for section, keys in config.SCHEMA.items():
        assert f"### [{section}]" in doc
        for key in keys:
            assert f"| `{key}` |" in doc, f"{section}.{key} missing from docs/cli.md"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_examples_validate(example, monkeypatch):
    monkeypatch.chdir(ROOT)  # module:function examples are importable from the repository root
    config.load(example)
