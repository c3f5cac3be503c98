"""--protocol paper, the settings-vs-released table, the cost estimate's counts and the seed summary."""

import numpy as np
import pandas as pd
import pytest

from lowres_safety.cli import _parser, checks, given_options, steer_config
from lowres_safety.pipelines import SteerConfig, estimate
from lowres_safety.pipelines.config import PAPER
from lowres_safety.pipelines.protocol import RELEASED, settings_table
from lowres_safety.pipelines.steer import seed_summary


def test_the_paper_config_is_the_released_settings_and_what_is_named_overrides_them():
    """Catches: a protocol setting lost, or an override ignored. Reference: PAPER and SteerConfig's own defaults."""
    paper = SteerConfig.paper()
    quick = SteerConfig()
    for name, value in PAPER.items():
        assert getattr(paper, name) == value
    for name in ("strength", "scope", "ablation", "recalibration", "calibrate_on", "adapted_from", "judge"):
        assert getattr(paper, name) == getattr(quick, name)  # the rest of the defaults are already the released ones
    assert SteerConfig.paper(n_per_class=16, seeds=(0, 1)).n_per_class == 16
    assert SteerConfig.paper(n_per_class=16, seeds=(0, 1)).run_seeds == (0, 1)
    assert quick.run_seeds == (0,) and SteerConfig(seed=3).run_seeds == (3,)
    with pytest.raises(ValueError, match="distinct"):
        SteerConfig(seeds=(1, 1))


@pytest.mark.parametrize("argv,expected", [
    ("--languages ar,yo --n-per-class 16 --seeds 0,1", {"languages": ("ar", "yo"), "n_per_class": 16, "seeds": (0, 1)}),
    ("--max-new-tokens 24 --k 0,64", {"max_new_tokens": 24, "ks": (0, 64)}),  # a quick default, named: it wins
    ("--n-fit all --n-per-class all", {}),
])
def test_protocol_paper_on_the_command_line_keeps_the_options_named(argv, expected):
    """Catches: options equal to the quick defaults read as not given (then --max-new-tokens 24 would stay 128), or
    the protocol's settings replaced by the quick defaults of options not named."""
    words = ["steer", "--protocol", "paper", *argv.split()]
    args = _parser().parse_args(words)
    config = steer_config(args, checks.check(args), given_options(words))
    assert config == SteerConfig.paper(**expected)
    quick = steer_config(_parser().parse_args(["steer"]), checks.check(_parser().parse_args(["steer"])),
                         given_options(["steer"]))
    assert quick == SteerConfig()


def test_the_settings_table_marks_what_matches_the_released_run():
    """Catches: a row claiming agreement the config does not have. Reference: the released values (RELEASED)."""
    source = ["en", "de", "fr", "es", "it", "nl", "pl", "ru", "zh", "ja"]
    paper = settings_table(SteerConfig.paper(), source).set_index("setting")
    quick = settings_table(SteerConfig(), source).set_index("setting")
    assert list(paper.index) == list(RELEASED)
    for name in ("source fit prompts", "evaluation prompts", "gate budgets k", "new tokens", "adapted baselines"):
        assert paper.loc[name, "same"] is True, name
    for name in ("source fit prompts", "evaluation prompts", "gate budgets k", "new tokens"):
        assert quick.loc[name, "same"] is False, name
    assert paper.loc["judge", "same"] is False  # no GPT-4o-mini offline: never claimed
    assert "128" in paper.loc["new tokens", "released"] and "64" in paper.loc["gate budgets k", "released"]
    assert all(where for where in paper["released in"])


def test_the_estimates_counts_and_gpu_price_by_hand():
    """Catches: an arm counted per seed that the seeds share (or the reverse), or the GPU formula off.
    Reference: the counts written out for 2 languages × 8 prompts, 2 seeds."""
    shared = estimate.steer_work(n_eval=8, eval_tokens=10.0, n_fit=100, fit_tokens=20.0, n_source_fit=60,
                                 n_languages=2, n_seeds=2, shared_across_seeds=True, new_tokens=16, batch_size=4)
    # none, ablation, addition, the gate's ablation arm, AdaSteer and CAST at k = 0 once; their k = 32 per seed
    assert shared.detail["arms"] == 2 * (6 + 2 * 2)
    assert shared.decode_rows == 20 * 8 and shared.decode_steps == (20 * 8 // 4) * 16
    kl = 20 * 4 + 2 * 4
    assert shared.prefill_tokens == int((20 * 8 + kl) * 10 + (100 + 120) * 20 + 2 * 8 * 10)
    apart = estimate.steer_work(n_eval=8, eval_tokens=10.0, n_fit=100, fit_tokens=20.0, n_source_fit=60,
                                n_languages=2, n_seeds=2, shared_across_seeds=False, new_tokens=16, batch_size=4)
    assert apart.detail["arms"] == 2 * (6 * 2 + 2 * 2) and apart.detail["fit_passes"] == 2 * 220
    gpu = dict(estimate.GPU_7B, batch_size=4)
    seconds = estimate.price_gpu(shared, gpu)
    weights = gpu["params"] * gpu["bytes_per_param"]
    by_hand = (160 / 4) * 16 * (weights / gpu["bandwidth"] + gpu["step_overhead_s"]) \
        + 2 * gpu["params"] * shared.prefill_tokens / gpu["flops"]
    assert seconds == pytest.approx(by_hand)
    swept = estimate.steer_work(n_eval=8, eval_tokens=10.0, n_fit=100, fit_tokens=20.0, n_source_fit=60,
                                n_languages=2, n_seeds=2, shared_across_seeds=True, new_tokens=16, batch_size=4,
                                sweep_runs=3)  # 3 generations of each language's 4 harmful prompts
    assert swept.decode_rows == shared.decode_rows + 3 * 2 * 4
    assert swept.prefill_tokens == shared.prefill_tokens + 3 * 2 * 4 * 10


def test_seed_summary_is_the_mean_and_spread_over_seeds():
    """Catches: the spread taken over languages or methods instead of seeds. Reference: numpy on the planted rows."""
    rng = np.random.default_rng(0)
    rows = [{"language": lang, "tier": "low", "method": m, "k": k, "seed": s, "harmful_refusal": rng.uniform(0, 100),
             "harmless_refusal": rng.uniform(0, 100), "kl": rng.uniform(), "cast_tuned_on": "x"}
            for lang in ("ar", "yo") for m, k in (("none", 0), ("gate", 4)) for s in (0, 1, 2)]
    table = pd.DataFrame(rows)
    table["selectivity"] = table["harmful_refusal"] - table["harmless_refusal"]
    out = seed_summary(table).set_index(["language", "method", "k"])
    for (lang, m, k), group in table.groupby(["language", "method", "k"]):
        assert out.loc[(lang, m, k), "harmful_refusal"] == pytest.approx(group["harmful_refusal"].mean())
        assert out.loc[(lang, m, k), "selectivity_sd"] == pytest.approx(np.std(group["selectivity"], ddof=1))
        assert out.loc[(lang, m, k), "kl"] == pytest.approx(group["kl"].mean())
        assert out.loc[(lang, m, k), "n_seeds"] == 3
    assert "seed" not in out


def test_each_language_is_drawn_with_its_own_seed():
    """Catches: the same source ids drawn in every language (the released code draws each language apart).
    Reference: per_class_sample of each language with data.language_seed."""
    import torch

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet, language_seed
    from lowres_safety.methods.base import per_class_sample, per_language_sample

    frame = pd.DataFrame([{"id": f"{sub}{i}-{lang}", "text": "x", "language": lang, "subset": sub, "split": "train",
                           "source_id": f"{sub}{i}"} for lang in ("sw", "yo") for sub in ("harmful", "harmless")
                          for i in range(40)])
    prompts = PromptSet(frame)
    acts = ActivationSet(torch.zeros(len(frame), 1, 1, 4), prompts, (0,), ("t_post_inst",))
    drawn = per_language_sample(acts, 8, seed=0).prompts.frame
    by_lang = {lang: set(part["source_id"]) for lang, part in drawn.groupby("language")}
    assert by_lang["sw"] != by_lang["yo"]
    for lang in ("sw", "yo"):
        own = per_class_sample(acts.where(language=lang), 8, language_seed(0, lang)).prompts.frame
        assert set(own["source_id"]) == by_lang[lang]


def test_the_baselines_authors_files_reach_the_methods_from_the_command_line(tmp_path):
    """Catches: --cast-data or --adasteer-vectors parsed but not handed to the methods (Context.upstream)."""
    from lowres_safety.methods.upstream import CAST_FILES

    for name in CAST_FILES:
        (tmp_path / "cast" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "cast" / name).write_text("{}")
    (tmp_path / "ada" / "RD").mkdir(parents=True)
    words = ["steer", "--cast-data", str(tmp_path / "cast"), "--adasteer-vectors", str(tmp_path / "ada")]
    args = _parser().parse_args(words)
    config = steer_config(args, checks.check(args), given_options(words))
    assert config.upstream_files == {"adasteer": str(tmp_path / "ada"), "cast": str(tmp_path / "cast")}
    assert SteerConfig().upstream_files == {}
