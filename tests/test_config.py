"""One config object: file + overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from streamrec.config import ConfigError, load_config, parse_override


def test_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[joiner]\nwindow_ms = 1000\n[kafka]\nbootstrap = "127.0.0.1:1"\n')
    s = load_config(f, ["joiner.window_ms=2000", "replay.seed=3"])
    assert s.joiner.window_ms == 2000 and s.replay.seed == 3 and s.kafka.bootstrap == "127.0.0.1:1"


def test_override_values_are_toml_or_strings() -> None:
    assert parse_override("a.b=12") == (["a", "b"], 12)
    assert parse_override("a.b=plain words") == (["a", "b"], "plain words")
    assert parse_override('a="x"') == (["a"], "x")


@pytest.mark.parametrize(
    "override,field",
    [
        ("joiner.window_ms=-5", "joiner.window_ms"),
        ("joiner.windw_ms=5", "joiner.windw_ms"),
        ("replay.duplicate_share=2", "replay.duplicate_share"),
        ("archive.target=s3", "archive.target"),
    ],
)
def test_bad_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert field in str(e.value)


def test_missing_file_and_bad_toml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[joiner\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)


def test_cli_help_explains_and_bad_config_exits_2() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "replay" in out.output and "stack" in out.output
    out = runner.invoke(app, ["--set", "joiner.window_ms=-1", "stack", "status"])
    assert out.exit_code == 2
    assert "joiner.window_ms" in out.output


def test_the_example_config_file_is_valid_and_builds_a_trainer() -> None:
    from trainer.loop import Trainer

    s = load_config(Path(__file__).resolve().parents[1] / "deploy" / "streamrec.example.toml")
    spec = s.features
    assert spec.settings("user_genre").dim == 8 and spec.settings("user_genre").optimizer == "ftrl"
    assert spec.settings("item_id").filter_threshold == 2 and spec.settings("item_id").dim == 16
    assert spec.file.endswith("examples/movielens/features.toml")  # the file it names, relative to it
    trainer = Trainer(s.trainer, spec)
    dims = trainer.ps.slot_dims()
    assert dims[spec.number("user_genre")] == 8 and dims[spec.number("item_id")] == 16


def test_overrides_rebuild_the_same_settings_in_another_process() -> None:
    from streamrec.config import to_overrides

    s = load_config(None, ['kafka.topics.examples="ex-1"', "joiner.window_ms=1234", "replay.rate=2.5",
                           'stack.run_dir="/tmp/x y"', "kafka.topics.partitions.features=5",
                           'features.actions.labels=["like", "click"]', "features.slots.item_id.dim=8"])
    ov = to_overrides(s)
    assert load_config(None, ov) == s
    assert "joiner.window_ms=1234" in ov and not any(o.startswith("archive.") for o in ov)
