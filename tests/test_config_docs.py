"""The config docs cover every field, and the migration guide's steps keep behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec.inspect as mi
import pytest

from runner.config._load import load_config, load_config_text
from runner.config._model import Config

ROOT = Path(__file__).resolve().parent.parent


def _field_names(t: mi.Type, seen: set[type]) -> set[str]:
    """Every field name reachable from ``t`` through Structs, lists, dicts and unions."""
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return set()
        seen.add(t.cls)
        names = {f.encode_name for f in t.fields}
        for f in t.fields:
            names |= _field_names(f.type, seen)
        return names
    if isinstance(t, mi.UnionType):
        return set().union(*(_field_names(u, seen) for u in t.types))
    if isinstance(t, mi.VarTupleType | mi.ListType):
        return _field_names(t.item_type, seen)
    if isinstance(t, mi.DictType):
        return _field_names(t.value_type, seen)
    return set()


def test_configuration_doc_names_every_field() -> None:
    """docs/configuration.md mentions every field a config file may hold."""
    doc = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    fields = _field_names(mi.type_info(Config), set()) - {"source"}
    missing = sorted(name for name in fields if not re.search(rf"`{name}`|\b{name}\b", doc))
    assert missing == []


def test_migration_steps_give_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps 2 and 3 of docs/migration.md turn the old example into an equivalent config."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    doc = (ROOT / "docs" / "migration.md").read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    old, providers, default = blocks[0], blocks[1], blocks[2]
    kept = "concurrency: 32\n"
    before = load_config_text(old)
    after = load_config_text(providers + default + kept)
    assert before == after


def test_examples_are_the_documented_ones() -> None:
    """Each example config the docs link to exists and loads."""
    keys = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "GEMINI_API_KEY": "z"}
    doc = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    for name in re.findall(r"\(\.\./(config/[a-z-]+\.yaml)\)", doc):
        assert load_config(ROOT / name, environ=keys).providers
