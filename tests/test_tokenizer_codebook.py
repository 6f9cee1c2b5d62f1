"""Codebook upkeep: every shipped config's dead-code threshold sits at most at half the mean number of vectors a
code gets per step, and a config that would re-seed most codes at every step is warned about with the fix. What
the threshold does to a trained codebook is measured by ``bench/tokenizer_quality.py`` (codes at the threshold)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokenizer import TokenizerConfig
from tokenizer.lightning import build_config, mean_code_assignments, warn_on_codebook_churn

CONFIGS = Path(__file__).resolve().parents[1] / "tokenizer" / "configs"


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_every_shipped_config_has_its_threshold_below_the_mean_count(name) -> None:
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    config = build_config(cfg["model"]["preset"], cfg["model"].get("overrides"))
    mean = mean_code_assignments(config, cfg["data"]["batch_size"])
    assert config.threshold_ema_dead_code <= 0.5 * mean, (name, config.threshold_ema_dead_code, mean)


def test_a_churning_config_is_warned_about_with_the_fix() -> None:
    with pytest.warns(UserWarning, match=r"threshold_ema_dead_code 0.5 is not below the mean 0.50 .*about 0.25"):
        warn_on_codebook_churn(TokenizerConfig.small(), windows_per_step=4)
