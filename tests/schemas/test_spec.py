"""The feature spec: what it declares, what it refuses (naming the field), and which changes keep the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from schemas.spec import FeatureSpec, SpecError, compatibility, load_spec, merge
from streamrec.config import ConfigError, load_config
from tests.conftest import MOVIELENS_SPEC

SPEC_TOML = """
unknown = "dead_letter"
[embedding]
dim = 8
[slots]
country = { number = 3, side = "user" }
user_hash = { number = 1, side = "user", type = "int", dim = 16, optimizer = "ftrl", filter_threshold = 2 }
category = { number = 2, side = "item", ttl_s = 3600 }
[crosses]
country_x_category = { number = 40, of = ["country", "category"] }
[dense]
price = { side = "item", default = 1.0, normalize = "log1p" }
[actions]
labels = ["buy", "click"]
ignored = ["view"]
"""


def spec_of(changes: dict) -> FeatureSpec:
    return FeatureSpec.model_validate(merge(MOVIELENS_SPEC.model_dump(exclude={"file"}), changes))


def test_a_spec_file_declares_slots_crosses_dense_and_actions(tmp_path: Path) -> None:
    f = tmp_path / "features.toml"
    f.write_text(SPEC_TOML)
    s = load_spec(f)
    assert s.model_slots == ["user_hash", "category", "country", "country_x_category"]  # by number
    assert s.settings("user_hash").dim == 16 and s.settings("user_hash").optimizer == "ftrl"
    assert s.settings("country").dim == 8 and s.settings("country").optimizer == "adagrad"  # [embedding]
    assert s.settings("category").ttl_s == 3600 and s.settings("user_hash").filter_threshold == 2
    assert s.side("country_x_category") == "item" and s.side("price") == "item"  # a cross with an item slot
    assert s.sparse_on("user") == {"user_hash": 1, "country": 3}
    assert s.sparse_on("item") == {"category": 2, "country_x_category": 40}
    assert s.labels == ["buy", "click"] and s.known_actions == {"buy", "click", "view"}
    assert s.fid("country", "de") >> 48 == 3 and s.cross_fid("country_x_category", 1, 2) >> 48 == 40
    assert s.unknown == "dead_letter" and s.file == str(f.resolve())


@pytest.mark.parametrize("changes,field", [
    ({"slots": {"zip": {"number": 1}}}, "number 1"),  # taken by user_id
    ({"slots": {"zip": {"dim": 0}}}, "slots.zip.dim"),
    ({"slots": {"zip": {"side": "both"}}}, "slots.zip.side"),
    ({"slots": {"9lives": {"number": 77, "side": "user"}}}, "9lives"),
    ({"crosses": {"user_genre": {"of": ["user_id", "nope"]}}}, "crosses.user_genre.of"),
    ({"crosses": {"user_genre": {"of": ["user_id", "position"]}}}, "position"),  # a retired slot
    ({"actions": {"ignored": ["impression", "click"]}}, "click"),
    ({"slots": {"zip": {"dimm": 4}}}, "slots.zip.dimm"),
])
def test_a_bad_spec_is_refused_naming_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        spec_of(changes)
    assert field in str(e.value)


def test_a_bad_spec_in_the_config_fails_with_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"features\.slots\.zip\.dim"):
        load_config(None, ["features.slots.zip.dim=-2"])
    with pytest.raises(ConfigError, match="features.file"):
        load_config(None, [f'features.file="{tmp_path / "missing.toml"}"'])


def test_the_config_names_a_spec_file_or_holds_one_inline(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "f.toml").write_text(SPEC_TOML)
    cfg = tmp_path / "a.toml"
    cfg.write_text('[features]\nfile = "specs/f.toml"\n[features.slots.country]\ndim = 4\n')
    s = load_config(cfg)
    assert s.features.settings("country").dim == 4 and s.features.labels == ["buy", "click"]  # file + overrides
    inline = tmp_path / "b.toml"
    inline.write_text("[features]\n" + SPEC_TOML.replace("[embedding]", "[features.embedding]")
                      .replace("[slots]", "[features.slots]").replace("[crosses]", "[features.crosses]")
                      .replace("[dense]", "[features.dense]").replace("[actions]", "[features.actions]"))
    t = load_config(inline, ["features.slots.category.dim=32"])
    assert t.features.model_slots == s.features.model_slots and t.features.settings("category").dim == 32
    assert "user_id" not in t.features.slots  # an inline spec is the whole spec
    u = load_config(None, [f'features.file="{tmp_path / "specs" / "f.toml"}"'])
    assert u.features.model_slots == s.features.model_slots
    assert load_config().features.model_slots == MOVIELENS_SPEC.model_slots  # the default: MovieLens


def test_compatible_changes_add_or_retire_slots_and_tune_tables() -> None:
    new = spec_of({"slots": {"device": {"number": 11, "side": "user"}, "zip": {"retired": True},
                             "item_id": {"filter_threshold": 5, "ttl_s": 60}},
                   "dense": {"item_price": {"side": "item"}}})
    problems, notes = compatibility(MOVIELENS_SPEC, new)
    assert problems == []
    text = "\n".join(notes)
    assert "'device' (number 11) added" in text and "'zip' retired" in text
    assert "filter_threshold, ttl_s changed" in text and "dense 'item_price' added" in text
    assert "refuses snapshots of the old spec" in text  # the model's inputs changed


@pytest.mark.parametrize("changes,why", [
    ({"slots": {"year": {"number": 12}}}, "'year': number 8 -> 12"),
    ({"slots": {"zip": {"side": "item"}}}, "'zip': side user -> item"),
    ({"slots": {"zip": {"type": "int"}}}, "'zip': type string -> int"),
    ({"slots": {"zip": {"dim": 32}}}, "'zip': dim 16 -> 32"),
    ({"slots": {"zip": {"optimizer": "ftrl"}}}, "'zip': optimizer adagrad -> ftrl"),
    ({"crosses": {"user_genre": {"of": ["age", "genre"]}}}, "cross 'user_genre': of"),
    ({"dense": {"user_activity": {"side": "item"}}}, "dense 'user_activity': side"),
])
def test_incompatible_changes_say_why(changes: dict, why: str) -> None:
    problems, _ = compatibility(MOVIELENS_SPEC, spec_of(changes))
    assert any(why in p for p in problems), problems


def test_removing_a_slot_is_incompatible_retiring_it_is_not() -> None:
    data = MOVIELENS_SPEC.model_dump(exclude={"file"})
    del data["slots"]["zip"]
    problems, _ = compatibility(MOVIELENS_SPEC, FeatureSpec.model_validate(data))
    assert problems == ["slot 'zip' (number 5) was removed: keep it with retired = true, so that its number is "
                        "never used again"]
    # a number is never reused, not even a retired slot's (within a spec that is refused at once)
    del data["slots"]["position"]
    data["slots"]["device"] = {"number": 9, "side": "item"}
    problems, _ = compatibility(MOVIELENS_SPEC, FeatureSpec.model_validate(data))
    assert any("'device': number 9 was 'position''s" in p for p in problems), problems
    with pytest.raises(ValidationError, match="number 9 is also 'position''s"):
        spec_of({"slots": {"device": {"number": 9, "side": "item"}}})


def test_cli_features_check_exit_codes(tmp_path: Path) -> None:
    ok = tmp_path / "ok.toml"
    ok.write_text(f'[features]\nfile = "{MOVIELENS_SPEC.file}"\n[features.slots.device]\nnumber = 11\nside = "user"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[features]\nfile = "{MOVIELENS_SPEC.file}"\n[features.slots.year]\nnumber = 12\n')
    runner = CliRunner()
    out = runner.invoke(app, ["features", "check", MOVIELENS_SPEC.file, str(ok)])
    assert out.exit_code == 0 and "is compatible" in out.output and "'device' (number 11) added" in out.output
    out = runner.invoke(app, ["features", "check", MOVIELENS_SPEC.file, str(bad)])
    assert out.exit_code == 1 and "NOT compatible" in out.output and "number 8 -> 12" in out.output
    out = runner.invoke(app, ["features", "check", MOVIELENS_SPEC.file, str(tmp_path / "nope.toml")])
    assert out.exit_code == 2 and "cannot read the feature spec" in out.output


def test_spec_errors_name_the_field() -> None:
    e = SpecError("items[2].sparse.colour", "unknown slot 'colour'")
    assert e.field == "items[2].sparse.colour" and str(e) == "items[2].sparse.colour: unknown slot 'colour'"


def test_the_readme_spec_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Your features: the feature spec", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "c.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    spec = load_config(tmp_path / "c.toml").features
    assert spec.model_slots == ["user_hash", "country", "item_hash", "category", "country_x_category"]
    assert spec.settings("category").dim == 8 and spec.settings("item_hash").filter_threshold == 2
