"""Run one experiment from the settings and write its report (the CLI's entry; tests call it too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.experiments import collisionless, report, sync_interval

if TYPE_CHECKING:
    from streamrec.config import Settings

EXPERIMENTS = {"collisionless": (collisionless, "collisionless"), "sync-interval": (sync_interval, "sync_interval")}


def run_experiment(name: str, settings: Settings, quick: bool = False, out_dir: Path | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], Path]:
    """(result, path of report.md). ``quick``: the tiny preset of ``ExperimentsConfig.quick``."""
    module, section = EXPERIMENTS[name]
    ecfg = settings.experiments.quick() if quick else settings.experiments
    out = out_dir or ecfg.out_dir / name
    result = module.run(settings, getattr(ecfg, section), progress)
    result["quick"] = quick
    return result, report.write(result, out, module.describe(result))
