"""Cells of notebooks/05_the_papers_analyses.ipynb (written by make_notebooks.py)."""

ANALYSES_SETTINGS = '''import os
from pathlib import Path

import lowres_safety as ls

ls.notebook_setup()  # figures that survive an HTML export, widget progress bars, no library deprecation noise

# On PolyRefuse (beside the checkout) at the settings the README reports; on the built-in natural set otherwise.
# The test suite shrinks everything through these environment variables.
MODEL = os.environ.get("LOWRES_NB_MODEL", "organism")
POLYREFUSE = Path(os.environ.get("LOWRES_NB_POLYREFUSE") or
                  Path(ls.__file__).resolve().parents[2] / "shared" / "data" / "Multilingual-Refusal")
ON_POLYREFUSE = POLYREFUSE.is_dir() and os.environ.get("LOWRES_NB_DATA", "polyrefuse") == "polyrefuse"
N_PER_CLASS = int(os.environ.get("LOWRES_NB_N", 64 if ON_POLYREFUSE else 20))   # train prompts per class and language
SEEDS = range(int(os.environ.get("LOWRES_NB_SEEDS", 5)))
BUDGETS = [int(b) for b in os.environ.get("LOWRES_NB_BUDGETS", "1,4,16,64").split(",")]
MAX_NEW_TOKENS = int(os.environ.get("LOWRES_NB_TOKENS", 24))
SWEEP_N = int(os.environ.get("LOWRES_NB_SWEEP_N", 16))   # harmful prompts per language for the generation sweeps'''

CELLS = [
    "# 5. The paper's analyses\n\nEvery analysis the released code reports, as one call each on the toolkit's own "
    "objects (`ls.analyses`), with its figure: how few examples a readout needs, whether the high-resource "
    "subspace is special, the gate by rank, what one added language brings, the gate on another data set, "
    "refusal as the steering strength grows, where ablation removes refusal, and utility as released. Each "
    "function's docstring names the released script it follows and where it differs.",
    ANALYSES_SETTINGS,
    "from lowres_safety import analyses, plots\n\n"
    "model = ls.load_model(MODEL)\n"
    "layer = ls.presets.preset_for(ls.models.model_id(model)).gate_layer if ls.presets.preset_for(\n"
    "    ls.models.model_id(model)) else model.cfg.n_layers // 2\n"
    "# train, val and test prompts: PolyRefuse's splits, or the natural set's halves with a quarter of train as val\n"
    "prompts = ls.data.analysis_splits(POLYREFUSE if ON_POLYREFUSE else 'natural', n_per_class=N_PER_CLASS)\n"
    "acts = ls.extract(model, prompts, [layer], ('t_post_inst',), cache=True)\n"
    "high = ls.in_tier(prompts.languages, 'high')\n"
    "print(ls.models.model_id(model), 'layer', layer, len(prompts), 'prompts;', prompts.languages)",
    "**1. How few examples does a readout need?** The released few-shot recoverability: the high-resource "
    "direction (fixed), readouts fitted on n + n target examples alone, and two controls.",
    "rec = analyses.recoverability(acts, layer, source_languages=high, budgets=BUDGETS, seeds=SEEDS)\n"
    "display(rec[rec.language.str.startswith('__macro')].groupby(['language', 'readout', 'budget']).auc.mean()\n"
    "        .unstack('budget').round(3))\n"
    "plots.fewshot_curves(rec, language='__macro__')",
    "**2. Is the high-resource subspace special?** The released readout comparison at a few ranks: the gate "
    "(`subspace_logistic`, group `hrl`) against principal components of the same source activations and random "
    "subspaces of the same rank, each refitted with the same k + k examples (thresholds from the k examples, "
    "as the paper's figures).",
    "readouts = analyses.compare_readouts(acts, layer, targets=[l for l in prompts.languages if l not in high],\n"
    "                                     budgets=BUDGETS[:2], seeds=list(SEEDS)[:2], ranks=(1, 5),\n"
    "                                     direction_groups=('hrl',), subspace_groups=('hrl',),\n"
    "                                     random_subspaces=True, threshold_source='target_budget')\n"
    "same_rank = readouts[(readouts.language == '__macro__') & (readouts.split == 'test')\n"
    "                     & readouts.method.isin(['subspace_logistic', 'pca_subspace_logistic',\n"
    "                                             'random_subspace_logistic'])]\n"
    "answer = same_rank.groupby(['rank', 'budget', 'method']).balanced_accuracy.mean().unstack('method').round(3)\n"
    "display(answer)\n"
    "plots.readout_curves(readouts)",
    "ls.claim('every readout scored on every target', set(readouts.method) >= {'subspace_logistic', "
    "'pca_subspace_logistic', 'random_subspace_logistic', 'full_space_logistic'})",
    "**3. The gate by rank** (the released ranks 1, 2, 3, 5, 8, 10, as far as there are source languages).",
    "ranks = analyses.rank_sweep(acts, layer, source_languages=high, budgets=[0, *BUDGETS[:2]], seeds=list(SEEDS)[:2])\n"
    "plots.rank_curves(ranks, language='__macro__')",
    "**4. What does one added language bring?** Zero-shot gates from the high-resource languages alone and with "
    "one mid- or low-resource language added.",
    "transfer = analyses.subspace_transfer(acts, layer, rank=min(10, len(high)))\n"
    "display(transfer[transfer.language.str.startswith('__macro') & (transfer.split == 'test')]\n"
    "        .pivot_table(index=['condition', 'added'], columns='language', values='f1').round(3))\n"
    "if (transfer.condition == 'hrl_plus_lrl_full').any():\n"
    "    display(plots.subspace_transfer_heatmap(transfer))",
    "**5. The gate on another data set.** The released out-of-distribution transfer, on the phrase-matched twins "
    "as the other set (a harmful-only CSV with a harmless counterpart works the same: `ls.load_prompts(path, "
    "languages=[...], harmless_from=..., category='category')`).",
    "twins = ls.data.load_builtin([l for l in prompts.languages if l in ls.data.load_builtin(name='twins').languages],\n"
    "                             name='twins')\n"
    "twin_acts = ls.extract(model, twins, [layer], ('t_post_inst',), cache=True)\n"
    "ood = analyses.ood_transfer(acts.where(split='train', language=high), twin_acts, layer,\n"
    "                            rank=min(10, len(high)), seeds=SEEDS)\n"
    "display(ood[ood.language == '__macro__'].groupby(['gate', 'shot']).balanced_accuracy.agg(['mean', 'std']).round(3))\n"
    "plots.ood_bars(ood)",
    "**6. Refusal as the steering strength grows** (generated text; the released λ grid, every second value here).",
    "v = ls.directions.pc1_of_directions(acts.where(split='train'), high, layer)\n"
    "chosen = prompts.where(split='test', subset='harmful', language=[high[0], *[l for l in prompts.languages\n"
    "                                                                     if l not in high][:2]])\n"
    "sweep_prompts = ls.PromptSet(chosen.frame.groupby('language').head(SWEEP_N), 'the sweeps\\' prompts')\n"
    "strength = analyses.strength_sweep(model, sweep_prompts, v, layer, strengths=analyses.sweeps.STRENGTHS[::2],\n"
    "                                   max_new_tokens=MAX_NEW_TOKENS)\n"
    "plots.strength_curves(strength)",
    "**7. Where does ablation remove refusal?** The released directional ablation, one block at a time, with "
    "English's and the high-resource pc1 direction (every fourth layer here).",
    "all_layers = ls.extract(model, prompts.where(split='train', language=high), 'all', ('t_post_inst',), cache=True)\n"
    "ablation = analyses.ablation_sweep(model, sweep_prompts, all_layers, layers=range(0, model.cfg.n_layers, 4),\n"
    "                                   sources=(high[0], 'hrl_pooled'), max_new_tokens=MAX_NEW_TOKENS)\n"
    "plots.ablation_curves(ablation)",
    "**8. Utility as released**: accuracy, margin, entropy and, for the gate, its fire rate, by subject category "
    "(the built-in questions carry none; Global-MMLU's files do).",
    "items = ls.utility.load_mc_demo([l for l in prompts.languages if l in set(ls.utility.load_mc_demo().language)])\n"
    "gate = ls.Gate(seed=0).fit(acts.where(split='train', language=high), layer, 't_post_inst', high)\n"
    "mc_prompts = ls.generation.as_prompt_set([ls.utility.mc_prompt(r) for r in items.to_dict('records')])\n"
    "fired = gate.predict(ls.extract(model, mc_prompts, [layer], ('t_post_inst',))).numpy()\n"
    "utility = ls.utility.mc_summary(ls.utility.mc_scores(model, items), fired).assign(method='none')\n"
    "display(utility.round(3))\n"
    "plots.utility_by_category(utility)",
]
