"""docs/influence.md stays in step with the method registry: every option of every registered
method appears in its options table with the registry's default."""

from pathlib import Path

from dtda.attribute.influence import COMMON_OPTIONS, METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "influence.md"


def test_every_registered_option_is_documented_with_its_default():
    doc = DOC.read_text()
    rows = [("all", k, v) for k, v in COMMON_OPTIONS.items()]
    rows += [(f"`{name}`", k, v) for name, spec in METHODS.items() for k, v in spec.options.items()]
    for method, option, default in rows:
        row = f"| {method} | `{option}` | `{default!r}` |"
        assert row in doc, f"docs/influence.md lacks the options row {row!r}"


def test_every_registered_method_is_documented():
    doc = DOC.read_text()
    for name in METHODS:
        assert f"| `{name}` | " in doc, f"docs/influence.md lacks method {name!r} in its methods table"
