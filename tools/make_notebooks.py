"""Writes notebooks/*.ipynb from the cell lists below (outputs stripped). Run: python tools/make_notebooks.py [FOLDER]

The notebooks are the source of truth once written; this script exists so their cells can
be reviewed as plain Python in one diff.
"""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_05 import CELLS as ANALYSES  # noqa: E402

SETTINGS = '''import os

import lowres_safety as ls

ls.notebook_setup()  # figures that survive an HTML export, widget progress bars, no library deprecation noise

# Small settings keep every notebook to a few minutes on 2 CPU cores; the test suite
# shrinks them further through these environment variables.
MODEL = os.environ.get("LOWRES_NB_MODEL", "organism")   # "default", "organism", a folder or a HF id
N_PER_CLASS = int(os.environ.get("LOWRES_NB_N", 12))    # prompts per class and language
MAX_NEW_TOKENS = int(os.environ.get("LOWRES_NB_TOKENS", 24))
LANGUAGES = os.environ.get("LOWRES_NB_LANGUAGES", "en,de,fr,zh,ar,hi,sw,yo").split(",")'''

ELSEWHERE = '''**Pointing it elsewhere.** PolyRefuse (upstream layout) and a 7B model on a GPU work the same way:

```python
prompts = ls.data.load_polyrefuse("../shared/data/Multilingual-Refusal", ["en", "de", "ar", "th", "yo"],
                                  split="test", n_per_class=32)
model = ls.load_model("Qwen/Qwen2.5-7B-Instruct")   # a local folder or HF id; bf16 on GPU
```'''

NOTEBOOKS = {
    "01_is_the_signal_there.ipynb": [
        "# 1. Is the harmfulness signal there?\n\nThe paper's first claim: the direction that separates harmful "
        "from harmless prompts in high-resource languages also separates them in low-resource ones. Here we "
        "extract the residual stream at the last prompt token, build that direction, and score every language "
        "layer by layer.",
        SETTINGS,
        "import lowres_safety as ls\nfrom lowres_safety import directions, plots, probing\n\n"
        "model = ls.load_model(MODEL)\n"
        "# the natural set: harmful and ordinary requests written independently (the main job's data)\n"
        "prompts = ls.data.load_builtin(LANGUAGES, name='natural', split='train', n_per_class=N_PER_CLASS)\n"
        "print(ls.models.model_id(model), len(prompts), 'prompts')\nls.show_tokens(model, prompts.texts[0]).tail(8)",
        "The table above shows where `t_inst` (last instruction token) and `t_post_inst` (last token of the chat "
        "template, where the answer starts) fall. Extraction keeps only those two positions at every layer.",
        "acts = ls.extract(model, prompts, 'all', ('t_inst', 't_post_inst'), cache=True)\n"
        "high = ls.in_tier(prompts.languages, 'high')\n"
        "v = directions.pooled(acts, high)   # [layer, position, d_model], difference of means over high-resource\n"
        "sep = probing.separability(acts, v, direction_name='pooled_high', own=True, probe=False)\n"
        "plots.separability(sep, direction='pooled_high', position='t_post_inst')",
        "How to read it: a line near 1 at the middle layers means the representation transfers to that "
        "language; a line that stays near 0.5 everywhere is a *representation* failure. The high-resource "
        "lines are in-sample (the direction was fitted on them), so they should sit high; the others are the "
        "test. On the shipped organism and the natural set at 12 per class, Swahili reaches about 0.8 at the "
        "best layer and Arabic, Hindi and Yoruba 0.65-0.72: below the high-resource languages, because the "
        "organism's rule was built on PolyRefuse's prompts, not on these. Notebook 2 checks the diagnosis on "
        "PolyRefuse, where the construction says which languages should separate.",
        "pooled = sep[(sep.direction == 'pooled_high') & (sep.position == 't_post_inst')]\n"
        "best = int(pooled.groupby('layer').auroc.mean().idxmax())\n"
        "at_best = pooled[pooled.layer == best].set_index('language').auroc\n"
        "ls.claim(f'at layer {best} the direction separates the high-resource languages it was fitted on '\n"
        "         '(AUROC >= 0.75)', (at_best[high] >= 0.75).all(), at_best.round(3))\n"
        "print('the others:', at_best.drop(high).round(2).to_dict())\n"
        "plots.projection_distributions(probing.projections(acts, v, best, 't_post_inst'))",
        "Both clouds sitting lower for the low-resource tier, still apart, is the picture of a *calibration* "
        "problem: a threshold set on English would call most of them harmless.",
        "**Harm or form?** An AUROC on prompts whose classes differ in form (length, punctuation, template) can "
        "come from the form alone. The form controls score, per language, the token count alone, a "
        "cross-validated probe on form features, the direction, and the direction with form partialled out; "
        "the phrase-matched twins (the same topic and form, harmful or not) are the form-free check.",
        "from lowres_safety import form\n"
        "controls = form.form_controls(acts, v, best, model.tokenizer)\n"
        "display(controls.pivot_table(index='language', columns='control', values='auroc').round(2))\n"
        "twins = ls.data.load_builtin(LANGUAGES, name='twins', n_per_class=N_PER_CLASS)\n"
        "twin_acts = ls.extract(model, twins, [best], acts.positions, cache=True)\n"
        "li = acts.layer_index(best)\n"
        "on_twins = form.form_controls(twin_acts, v[li:li + 1], best, model.tokenizer)\n"
        "display(on_twins[on_twins.control == 'direction'].set_index('language')[['auroc', 'auroc_low', 'auroc_high']]\n"
        "        .round(2).rename(columns=lambda c: 'twins ' + c))\n"
        "plots.form_controls(controls)",
        "Reading it: the natural set was written with its classes matched in form, and on it (12 per class) the "
        "token count alone sits near chance (0.45-0.64) and the form probe below that, so the direction's AUROC "
        "is not the prompts' form; partialling form out moves it little except in Yoruba (about 0.65 to 0.45, "
        "inside wide intervals). On the twins, where harm is the only difference, English separates clearly "
        "(about 0.9) and the other languages' intervals still reach 0.5 at this size: more prompts decide it.",
        "per_lang = directions.per_language(acts)\ncos = directions.cosine_matrix(per_lang, acts.layers, acts.positions)\n"
        "plots.cosine_by_layer(cos, reference='en', position='t_post_inst')",
        "plots.transfer_heatmap(probing.transfer_matrix(acts, best))",
        ELSEWHERE,
    ],
    "02_where_calibration_breaks.ipynb": [
        "# 2. Where does calibration break?\n\nThe representation is there (notebook 1). Is it acted on? We "
        "generate answers, judge refusals, put representation and action side by side, and then look for where "
        "the decision diverges: the refusal logit attribution, the threshold shift and a dose-response sweep.",
        SETTINGS,
        "import lowres_safety as ls\nfrom lowres_safety import attribution, calibration, directions, dose_response, "
        "evaluation, judges, plots, probing\n\nmodel = ls.load_model(MODEL)\n"
        "prompts = ls.data.load_builtin(LANGUAGES, n_per_class=N_PER_CLASS)\n"
        "acts = ls.extract(model, prompts, 'all', ('t_post_inst',), cache=True)\n"
        "high = ls.in_tier(prompts.languages, 'high')\n"
        "v = directions.pooled(acts, high)\nlayer = probing.choose_layer(acts, high, n_layers=model.cfg.n_layers)\nlayer",
        "completions = ls.generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS)\n"
        "refusal = evaluation.measure_refusal(model, prompts, completions)\n"
        "plots.refusal_by_language(refusal, judge='substring')",
        "held = probing.heldout_projections(acts, high, layer)   # each prompt on a direction fitted without it\n"
        "gap = calibration.gap_table(calibration.with_refusal(held, completions))\n"
        "display(gap[['language', 'tier', 'auroc', 'auroc_low', 'auroc_high', 'harmful_refusal', 'harmful_low', "
        "'harmful_high', 'harmless_refusal', 'failure_type', 'failure_direction', 'decided']].round(2))\n"
        "plots.gap_scatter(gap)",
        "Red points are the paper's *action failures*: separable (right of the AUROC line) yet refusing too few "
        "harmful prompts, or too many harmless ones. The bars are 95% bootstrap intervals; `decided` is False "
        "where they reach across a threshold and these prompts cannot tell.\n\n"
        "**Threshold shift.** Refusal as a logistic function of the projection, slope from the high-resource "
        "languages, one intercept per language: how much more harmfulness signal a language needs before it "
        "refuses half the time.",
        "proj = probing.projections(acts, v, layer, 't_post_inst')\n"
        "proj = calibration.with_refusal(proj, completions)\n"
        "try:\n    shift = calibration.threshold_shift(proj, high)\n    display(plots.threshold_shift_bars(shift))\n"
        "except ValueError as err:   # e.g. a model that never refuses\n    print(err)",
        "**Refusal-token logit attribution.** The refusal logit difference (the model's refusal openings against "
        "its usual compliant openings) at the last prompt token, split into every layer's attention and MLP and "
        "every head, on parallel prompts of a high- and a low-resource language.",
        "refusal_ids = judges.refusal_tokens_from(completions, model.tokenizer) or "
        "judges.first_token_ids(model.tokenizer, judges.DEFAULT_OPENINGS)\n"
        "compliance_ids = judges.compliance_tokens_from(completions, model.tokenizer, exclude=refusal_ids)\n"
        "print('refusal:', [model.tokenizer.decode([i]) for i in refusal_ids], ' compliance:', "
        "[model.tokenizer.decode([i]) for i in compliance_ids])\n"
        "pair = prompts.where(language=['en', 'sw'])\n"
        "attr = attribution.attribute(model, pair, refusal_ids, compliance_ids)\n"
        "plots.logit_lens_curves(attr.mean('lens'))",
        "plots.divergence_bars(attribution.compare_languages(attr, 'en', 'sw'))",
        "plots.head_heatmap(attr.mean('heads'), language='sw')",
        "attribution.direction_tokens(model, acts.vector(v, layer)).head(10)   # what the harmfulness direction promotes",
        "**Dose-response.** Add α·v̂ at a few layers and read harmful refusal, harmless refusal and KL at once "
        "(first-token refusal log-odds: one forward pass per grid point, no generation).",
        "from lowres_safety.hooks import default_alpha\n"
        "alpha = default_alpha(acts.where(language=high), acts.vector(v, layer), layer)\n"
        "layers = [layer - 4, layer, layer + 4]\n"
        "dose = dose_response.dose_response(model, prompts.where(language=['en', 'sw', 'yo']), "
        "{l: acts.vector(v, l) for l in layers}, layers, [0, alpha, 2 * alpha], refusal_ids)\n"
        "display(dose_response.alpha_at_half(dose))\nplots.dose_response_curves(dose)",
        "## Checking the diagnosis against a known construction\n\nOn a real model nobody knows which "
        "verdict is right. The two shipped organisms are built so that someone does (README, \"The model "
        "organisms\"): `organism` refuses iff the last prompt token's projection on v̂ at L* = 16 exceeds a "
        "threshold θ learned on high-resource languages, so a language whose prompts separate but sit under θ "
        "is an *action failure* by construction; `organism-erased` is the same network reading every Thai or "
        "Korean message as one letter of its script, so nothing of their harmfulness reaches L*: a "
        "*representation failure* by construction. The construction predicts each language's type from "
        "projections alone, before any answer is generated; the diagnosis then has to find the same from "
        "answers and held-out projections. Arabic, Korean and Thai refuse no harmful prompt in either "
        "organism, so a refusal table cannot tell the two apart. This runs on PolyRefuse's test split when "
        "it lies in `shared/` beside the checkout.",
        "from pathlib import Path\n\nimport pandas as pd\n"
        "from lowres_safety.organisms.ground_truth import GroundTruth\nfrom lowres_safety.shipped import adapter_dir\n\n"
        "POLYREFUSE = Path(os.environ.get('LOWRES_NB_POLYREFUSE') or\n"
        "                  Path(ls.__file__).resolve().parents[2] / 'shared' / 'data' / 'Multilingual-Refusal')\n"
        "CHECK = os.environ.get('LOWRES_NB_CHECK', 'en,de,fr,ar,ko,th').split(',')\n"
        "N_CHECK = int(os.environ.get('LOWRES_NB_CHECK_N', 16))   # per class and language: fewer decide nothing\n"
        "if POLYREFUSE.is_dir() and MODEL == 'organism':\n"
        "    truth = GroundTruth.load(adapter_dir('organism'))   # L*, v̂ and θ: the rule both organisms share\n"
        "    check = ls.data.load_polyrefuse(POLYREFUSE, CHECK, split='test', n_per_class=N_CHECK)\n"
        "    source = ls.in_tier(CHECK, 'high')\n"
        "    verdicts = []\n"
        "    for name in ('organism', 'organism-erased'):\n"
        "        organism = ls.load_model(name)\n"
        "        at_rule = ls.extract(organism, check, [truth.layer], ('t_post_inst',))\n"
        "        predicted = calibration.gap_table(truth.predict(at_rule)).set_index('language')  # no answer read\n"
        "        answers = ls.generate(organism, check, max_new_tokens=MAX_NEW_TOKENS)\n"
        "        held = probing.heldout_projections(at_rule, source, truth.layer)   # what `diagnose` reads\n"
        "        found = calibration.gap_table(calibration.with_refusal(held, answers))\n"
        "        verdicts.append(found.assign(organism=name, predicted=predicted.loc[found.language, 'failure_type'].to_numpy()))\n"
        "    verdicts = pd.concat(verdicts).rename(columns={'failure_type': 'diagnosed'})\n"
        "    shown = verdicts.set_index(['language', 'organism']).sort_index()[\n"
        "        ['predicted', 'diagnosed', 'decided', 'auroc', 'harmful_refusal', 'harmless_refusal']].round(2)\n"
        "    display(shown)\n"
        "    decided = verdicts[verdicts.decided]\n"
        "    ls.claim(f'every decided diagnosis ({len(decided)} of {len(verdicts)}) is the construction\\'s type, '\n"
        "             'in both organisms', (decided.diagnosed == decided.predicted).all(), shown)\n"
        "else:\n"
        "    print(f'PolyRefuse is not at {POLYREFUSE} (or MODEL is not the organism): the check needs both')",
        "Read across: where `decided` is True, `failure_type` (the diagnosis) should equal `predicted` (the "
        "construction) in both organisms. Korean changes type between the organisms while its refusal does "
        "not: separable and under θ in `organism` (AUROC about 0.8), blind in `organism-erased` (AUROC exactly "
        "0.5, every prompt the same input). Thai separates only weakly in `organism` already (about 0.7, a "
        "representation failure of the rule itself, undecided at this size) and not at all behind the lesion. "
        "Arabic, untouched by the lesion, stays an action failure in both. At 16 + 16 prompts a few cells stay "
        "undecided; the slow test "
        "`tests/test_organism_diagnosis.py` runs the full `diagnose` on 16 + 16 prompts per language and asserts "
        "every decided label.",
        ELSEWHERE,
    ],
    "03_fixing_it_with_four_examples.ipynb": [
        "# 3. Fixing it with four examples\n\nThe gate: a low-rank logistic readout on the subspace of the "
        "high-resource directions, its threshold reset with k examples per class of the target language. It "
        "routes each prompt: predicted harmful → add the refusal direction; predicted harmless → ablate it.",
        SETTINGS,
        "from pathlib import Path\n\nimport pandas as pd\nimport lowres_safety as ls\n"
        "from lowres_safety import evaluation, hooks, plots\nfrom lowres_safety.pipelines import steering\nfrom lowres_safety.presets import preset_for\n\n"
        "model = ls.load_model(MODEL)\nhigh = ls.in_tier(LANGUAGES, 'high')\n"
        "# this project's copy of PolyRefuse, in shared/ beside the checkout\n"
        "POLYREFUSE = Path(os.environ.get('LOWRES_NB_POLYREFUSE') or\n"
        "                  Path(ls.__file__).resolve().parents[2] / 'shared' / 'data' / 'Multilingual-Refusal')\n"
        "if POLYREFUSE.is_dir():\n"
        "    # the organism's construction names Arabic, Korean and Yoruba action failures on PolyRefuse (README):\n"
        "    # fit on its train split, score on test, as `lowres-safety steer --split test` does\n"
        "    targets = os.environ.get('LOWRES_NB_TARGETS', 'ar,ko,yo').split(',')\n"
        "    fit = ls.data.load_polyrefuse(POLYREFUSE, high + targets, split='train', n_per_class=4 * N_PER_CLASS)\n"
        "    held = ls.data.load_polyrefuse(POLYREFUSE, targets, split='test', n_per_class=N_PER_CLASS)\n"
        "    # the k examples: the organism's stage 1 was trained on the train split, so they come from val,\n"
        "    # which it never saw (`steer --calibrate-on val`); the train split's are shown beside them\n"
        "    val = ls.data.load_polyrefuse(POLYREFUSE, targets, split='val', n_per_class=32)  # val has 39 harmful\n"
        "else:  # the built-in demo set: disjoint source ids, half fit the methods and half are held out\n"
        "    every = ls.data.load_builtin(LANGUAGES)\n"
        "    targets = [lang for lang in every.languages if lang not in high][:2]\n"
        "    fit_ids = set(sorted(set(every.frame.source_id))[::2])\n"
        "    fit = ls.PromptSet(every.frame[every.frame.source_id.isin(fit_ids)].reset_index(drop=True), 'fit half')\n"
        "    held = every.frame[~every.frame.source_id.isin(fit_ids) & every.frame.language.isin(targets)]\n"
        "    held = ls.PromptSet(held.groupby(['language', 'subset']).head(N_PER_CLASS).reset_index(drop=True), 'held-out half')\n"
        "fit_acts = ls.extract(model, fit, 'all', ('t_post_inst',), cache=True)  # AdaSteer reads every layer\n"
        "# the organism's rule layer L* where the model has one (as `steer` uses), else a chosen middle layer\n"
        "fitted = steering.fit_methods(model, fit_acts, high, preset=preset_for(MODEL))\n"
        "print(held.origin, targets)\nfitted.gate, fitted.layer, round(fitted.alpha, 2)",
        "held_acts = ls.extract(model, held, [fitted.layer], ('t_post_inst',), cache=True)\n"
        "pools = {'train': fit_acts.where(language=targets)}\n"
        "if POLYREFUSE.is_dir():  # every layer: AdaSteer and CAST at k = 32 rebuild from these too\n"
        "    pools['val'] = ls.extract(model, val, 'all', ('t_post_inst',), cache=True)\n"
        "calib_acts = pools.get('val', pools['train'])  # where the routed gate below takes its k examples\nrows = []\n"
        "for name, pool in pools.items():\n    for lang in targets:\n"
        "        for k in (0, 1, 2, 4):\n"
        "            g = fitted.gate if k == 0 else fitted.gate.recalibrate(pool.where(language=lang), k, seed=0)\n"
        "            rows.append({'k from': name, 'language': lang, 'k': k,\n"
        "                         'balanced_accuracy': g.balanced_accuracy(held_acts.where(language=lang))})\n"
        "pd.DataFrame(rows).pivot(index=['k from', 'language'], columns='k', values='balanced_accuracy').round(3)",
        "With k = 0 the gate keeps the English threshold; a handful of target examples move it to where that "
        "language's harmful and harmless prompts actually sit. Now route generation through it, next to the "
        "baselines (ablation, fixed addition, AdaSteer, CAST).\n\n"
        "On the shipped organism, refusal is a threshold on the harmfulness direction at L* = 16. Where a "
        "language's prompts separate but fall under the English threshold, the recalibrated gate can route its "
        "harmful prompts to the refusal direction. Its k examples come from PolyRefuse val: the organism's "
        "stage 1 was trained on the train split's prompts and moved them along the direction, so four of those "
        "say where training put them, not where a new prompt lies (the table above shows both pools). "
        "Executed on 2026-12-05 at the default settings (12 + 12 test prompts per language), the k = 4 gate gave "
        "Δ = harmful − harmless refusal of 42 (ar), 58 (ko) and 58 (yo), against 0, 17 and 25 with no "
        "intervention and at most one prompt (8 points) more for AdaSteer or CAST; calibrated from train examples the day "
        "before it gave 50, 17 and 75. The price: 42% of Korean and Yoruba harmless prompts go to refusal, and "
        "ablating the direction from a prompt judged harmless costs a KL of 0.8–1.0 at the first answer token "
        "(the issue asks ≤ 0.3): the routed Arabic answers below are cut short where the unsteered model "
        "echoes the prompt. The README's steer table has the same method on 16 + 16 prompts in seven languages "
        "(mean Δ 54 against 22 for the best baseline). "
        "On the built-in demo set (used when `../shared` is absent) the organism answers every "
        "Arabic and Hindi prompt, harmful or not. There the gate's balanced accuracy stays near 0.5 and every "
        "method reads 0%: that is a dataset the organism was not built on, not a fix at work.",
        "table, completions = steering.evaluate(model, fitted, held, held_acts, calib_acts,\n"
        "                                       ks=(0, 4), max_new_tokens=MAX_NEW_TOKENS)\n"
        "display(table.round(3))\n"
        "gate4, none = (table[(table.method == m) & (table.k == k)].selectivity.mean() for m, k in (('gate', 4), ('none', 0)))\n"
        "ls.claim(f'the k = 4 gate raises mean selectivity over no intervention ({gate4:.1f} against {none:.1f})', "
        "gate4 >= none)\n"
        "plots.selectivity_bars(table)",
        "plots.refusal_tradeoff(table)",
        "**Calibration, or the readout?** Where the k = 4 gate falls short, would a better threshold help? "
        "`calibration.selectivity_ceiling` answers from the gate's scores alone: the best Δ any threshold reaches "
        "while sending at most a share of harmless prompts to addition, the share the KL bound leaves "
        "(`misrouting_budget`: a harmless prompt steered to refuse costs the addition row's KL, one ablated the "
        "k = 0 gate's `kl_ablated`). It is Δ exactly when addition makes a prompt refuse and ablation makes it "
        "answer, as on the organism (the addition and ablation rows above say whether they do). A gate below the "
        "unbounded ceiling lacks calibration, which more or better examples could give; a low ceiling within the "
        "bound means no threshold on this readout meets it. Executed on 2026-12-05 at the default settings, the "
        "unbounded ceiling was 50 (ar), 67 (ko) and 75 (yo) against the k = 4 gate's 42, 58 and 58: a prompt or two "
        "of calibration left. Within the bound there was no ceiling at all: on the shipped organism ablating the "
        "direction from a correctly routed harmless prompt already costs a KL of 0.66–0.79 here. The README's "
        "table runs the same on 100 + 100 test prompts per language with the `--ablate-everywhere` variant, "
        "whose ablation costs under 0.3 (`docs/experiments/fix_ceiling.py`): there no threshold gains more than 8 points.",
        "from lowres_safety.calibration import misrouting_budget, selectivity_ceiling\n\n"
        "score, frame, rows = fitted.gate.raw_logits(held_acts).numpy(), held.frame, []\n"
        "for lang in targets:\n"
        "    t = table[table.language == lang].set_index(['method', 'k'])\n"
        "    here = (frame.language == lang).to_numpy()\n"
        "    harmful = (frame.subset == 'harmful').to_numpy()[here]\n"
        "    row = {'language': lang, 'none Δ': t.loc[('none', 0), 'selectivity'],\n"
        "           'gate k = 4 Δ': t.loc[('gate', 4), 'selectivity'],\n"
        "           'ceiling Δ, no bound': selectivity_ceiling(score[here], harmful, max_misrouted=1.0)[0]}\n"
        "    add, ablate = t.loc[('addition', 0), 'kl'], t.loc[('gate', 0), 'kl_ablated']\n"
        "    row['KL: addition / ablation'] = f'{add:.1f} / {ablate:.2f}'\n"
        "    if add > ablate and ablate <= 0.3:  # else no routing meets the bound: ablating alone costs more\n"
        "        row['share allowed by KL 0.3'] = share = misrouting_budget(0.3, add, ablate)\n"
        "        row['ceiling Δ within it'] = selectivity_ceiling(score[here], harmful, max_misrouted=share)[0]\n"
        "    rows.append(row)\n"
        "pd.DataFrame(rows).round(2)",
        "One routed generation by hand, to see the hooks compose: `route` returns plain `(hook_name, fn)` pairs.",
        "gate4 = fitted.gate.recalibrate(calib_acts.where(language=targets[0]), 4, seed=0)\n"
        "routed = hooks.route(gate4, fitted.direction, fitted.alpha, n_layers=model.cfg.n_layers)\n"
        "out = ls.generate(model, held.where(language=targets[0]), routed, max_new_tokens=MAX_NEW_TOKENS)\n"
        "out[['subset', 'gate_score', 'ablated', 'completion']].head(8)",
        "**The same experiment as one call.** Everything above is what `lowres-safety steer` runs; in a notebook "
        "it is `ls.steer(config)`, with every option in a `SteerConfig` that is checked when it is built and saved "
        "into the results (`result.save(folder)` writes `steer.json`, which `lowres-safety steer --config` repeats).",
        "config = ls.SteerConfig(model=MODEL, languages=tuple(targets), ks=(0, 4), n_per_class=N_PER_CLASS,\n"
        "                        max_new_tokens=MAX_NEW_TOKENS, n_select=2, **({'data': str(POLYREFUSE), 'calibrate_on': 'val'} if POLYREFUSE.is_dir() else {}))\n"
        "result = ls.steer(config)\n"
        "result.table.round(3)",
        ELSEWHERE,
    ],
    "04_your_own_hypothesis.ipynb": [
        "# 4. Your own hypothesis (template)\n\nA worked example of testing a new intervention: *if the low-resource "
        "failure is a calibration offset, patching the English last-token residual into the parallel Swahili "
        "prompt at the gate layer should restore refusal, and patching earlier or later layers less so.* Replace "
        "the hook and the measurement with yours; everything is a `(hook_name, fn)` list and a tidy table.",
        SETTINGS,
        "import pandas as pd\nimport lowres_safety as ls\nfrom lowres_safety import directions, evaluation, hooks, judges\nfrom lowres_safety.pipelines import steering\n\n"
        "model = ls.load_model(MODEL)\nprompts = ls.data.load_builtin(['en', 'sw'], n_per_class=N_PER_CLASS)\n"
        "harmful = prompts.where(subset='harmful')\nen, sw = harmful.where(language='en'), harmful.where(language='sw')\n"
        "en = ls.PromptSet(en.frame.set_index('source_id').loc[sw.frame.source_id].reset_index(), 'en, parallel order')\n"
        "layers = list(range(0, model.cfg.n_layers, 4))\n"
        "en_acts = ls.extract(model, en, layers, ('t_post_inst',))\n"
        "tokens = judges.first_token_ids(model.tokenizer, judges.DEFAULT_OPENINGS)",
        "rows = [{'layer': None, 'refusal_log_odds': float(judges.refusal_score(model, sw, tokens).mean())}]\n"
        "for layer in layers:\n"
        "    cached = en_acts.at(layer, 't_post_inst')   # [prompt, d_model], rows in sw's order\n"
        "    # one prompt at a time, so each Swahili prompt gets its own English twin (the hypothesis' hook)\n"
        "    scores = [judges.refusal_score(model, [text], tokens, hooks.patch(cached[i], layer, position=-1))[0]\n"
        "              for i, text in enumerate(sw.texts)]\n"
        "    rows.append({'layer': layer, 'refusal_log_odds': float(sum(scores) / len(scores))})\n"
        "result = pd.DataFrame(rows)\nresult",
        "import plotly.express as px\n"
        "fig = px.line(result.dropna(), x='layer', y='refusal_log_odds', markers=True,\n"
        "              title='Swahili harmful prompts with the English last-token residual patched in')\n"
        "fig.add_hline(y=rows[0]['refusal_log_odds'], line_dash='dot', annotation_text='unpatched')\n"
        "fig.update_layout(xaxis_title='patched layer', yaxis_title='mean refusal log-odds')",
        "**Your own prompts.** Everything above takes any `PromptSet`. A CSV of your own (here written from the "
        "built-in set, with the column names a red-team sheet might have) loads with your column names; a "
        "harmful-only file takes `harmless_from=` (a PolyRefuse folder or another file):",
        "import tempfile, pathlib\n"
        "sheet = prompts.frame.rename(columns={'text': 'prompt', 'language': 'lang', 'subset': 'label', 'source_id': 'qid'})\n"
        "path = pathlib.Path(tempfile.mkdtemp()) / 'my_prompts.csv'\n"
        "sheet[['qid', 'lang', 'label', 'prompt']].to_csv(path, index=False)\n"
        "mine = ls.load_prompts(path, text='prompt', language='lang', label='label', source_id='qid')\n"
        "mine.frame.groupby(['language', 'subset']).size()",
        "**Reading it.** A rise well above the dotted line at one layer band says the decision-relevant state "
        "differs there; compare with a control patch (e.g. a harmless English prompt) before concluding.\n\n"
        "**Make it yours:** swap `hooks.patch` for `hooks.add`, `hooks.ablate`, `hooks.route`, or your own "
        "`fn(activation, hook) -> activation`, and swap `refusal_score` for `ls.generate` + "
        "`evaluation.refusal_rates` when first-token scores are not enough.",
    ],
    "05_the_papers_analyses.ipynb": ANALYSES,
}


def _is_prose(cell: str) -> bool:
    """Markdown cells are the ones that start with a heading or are not Python at all."""
    if cell.startswith("# "):
        return True
    try:
        compile(cell, "<cell>", "exec")
    except SyntaxError:
        return True
    return False


def main(out: Path | None = None) -> None:
    out = Path(out) if out is not None else Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[(new_markdown_cell if _is_prose(c) else new_code_cell)(c, id=f"cell-{i:02d}")
                                 for i, c in enumerate(cells)])  # stable ids: a rewrite diffs only what changed
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
