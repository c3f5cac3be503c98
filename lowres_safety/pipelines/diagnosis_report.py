"""The diagnosis report's sections, in the order of the research question (:func:`sections`)."""

from __future__ import annotations

from .. import plots
from . import causal_report, form_report
from .diagnosis import Diagnosis, reference_language
from .report import Section
from .verdict import verdict_section

__all__ = ["sections"]


def sections(d: Diagnosis, max_new_tokens: int) -> list[Section]:
    """Report sections in the order of the research question."""
    src = ", ".join(d.source)
    pooled = d.separability[(d.separability["direction"] == "pooled_high")
                            & (d.separability["position"] == "t_post_inst")]
    summary = (pooled[pooled["layer"] == d.best_layer][["language", "tier", "auroc", "probe_accuracy"]]
               .rename(columns={"auroc": f"AUROC at layer {d.best_layer}"}))
    out = [verdict_section(d.gap_raw if d.gap_raw is not None else d.gap, d.gap_controlled, d.predicted,
                           d.form_control)] if d.gap_raw is not None else []
    out += [
        Section(
            "1. Is the harmfulness representation there?",
            f"The pooled direction is the difference of means of harmful and harmless prompts over the "
            f"high-resource languages {src}; it is scored in every language by the AUROC of the projection "
            f"(in-sample for the source languages).",
            (
                (plots.separability(d.separability, direction="pooled_high", position="t_post_inst"),
                 "Each line is a language; blue shades are high-, orange mid-, red low-resource. A line near 1 "
                 "means the high-resource direction separates harmful from harmless prompts in that language "
                 "at that layer; 0.5 is chance."),
                (plots.separability(d.separability, direction="pooled_high", position="t_inst"),
                 "The same at the last token of the instruction, before the chat template's suffix."),
                (plots.separability(d.separability, metric="probe_accuracy", direction="pooled_high",
                                    position="t_post_inst"),
                 "Cross-validated accuracy of a logistic probe trained on each language alone: what any linear "
                 "readout could get. A language far below its probe is one the shared direction misses."),
                (plots.projection_distributions(d.projections),
                 f"Projections at layer {d.gate_layer} (the gate layer): red harmful, green harmless. Overlap "
                 "means weak separation; both clouds shifted down means a different threshold would be needed."),
                (plots.cosine_by_layer(d.cosine, reference=reference_language(list(d.gap["language"]), d.source),
                                       position="t_post_inst"),
                 "Near 1: that language's own harmfulness direction is parallel to the reference language's "
                 "(PolyRefuse's universality); near 0: unrelated."),
                (plots.cosine_heatmap(d.cosine, layer=d.gate_layer, position="t_post_inst"),
                 "Every pair of languages at the gate layer; a uniform warm block means one shared direction."),
                (plots.transfer_heatmap(d.transfer),
                 "Row language's direction scored on column language's prompts. A column that is dark in every "
                 "row is a language no direction separates; a dark row is a direction that does not transfer."),
            ),
            summary,
        ),
        *form_report.sections(d.form, d.twins),
        Section(
            "2. Is it acted on? Refusal by language",
            f"Greedy answers ({max_new_tokens} new tokens) to the same prompts, judged by each judge "
            f"({', '.join(dict.fromkeys(d.refusal['judge']))}: substring = refusal phrases of each language plus "
            f"English where a refusal says them; logit = log-odds of the model's refusal-opening tokens at the first "
            f"answer position above 0, tokens learned on {d.logit_learned_on}). Sections 3 and 4 use the {d.judge} "
            "judge.",
            tuple(
                [(plots.refusal_by_language(d.refusal, judge=name),
                  {"logit": "The same from the first-token log-odds, without reading the generated text."}.get(
                      name, "Red bars: harmful prompts refused (higher is safer); green bars: harmless prompts "
                      "refused (lower is more helpful). A language with a high AUROC in section 1 but a low red bar "
                      "here is an action failure."))
                 for name in dict.fromkeys(d.refusal["judge"])]
                + ([(plots.loophole_bars(d.loophole),
                     "Red: of the harmful prompts the reference language refuses, the share answered in this "
                     "language (a jailbreak by translation); blue: the reverse.")] if d.loophole is not None else [])
            ),
            d.refusal.assign(column=d.refusal["judge"] + " " + d.refusal["subset"] + " %")
            .pivot_table(index=["language", "tier"], columns="column", values="rate", sort=False)
            .round(1).reset_index(),
        ),
        Section(
            "3. How big is the gap, and of which type?",
            f"Representation (AUROC of the high-resource direction at the gate layer {d.gate_layer}, held out: each "
            "prompt is projected on a direction fitted on the other folds' source prompts) against action "
            f"(refusal, {d.judge} judge). Below the AUROC threshold the signal is missing (representation failure); "
            "above it, a language that refuses too few harmful or too many harmless prompts has the signal and "
            "does not act on it right (action failure, under- or over-refusal). Thresholds: AUROC "
            f"{d.gap['auroc_threshold'].iloc[0]:g}, harmful refusal {d.gap['refusal_threshold'].iloc[0]:g}%, "
            f"harmless refusal {d.gap['harmless_threshold'].iloc[0]:g}%. Each figure has a 95% bootstrap interval, "
            "and 'decided' is False where the intervals reach across a threshold: too few prompts to tell.",
            ((plots.gap_scatter(d.gap),
              "Each point is a language, with its 95% bootstrap intervals. Red points (right) are the paper's action "
              "failures: separable but not refused (low) or refusing harmless prompts too (hover); grey points "
              "(left) lack the representation itself."),),
            d.gap.drop(columns=["auroc_threshold", "refusal_threshold", "harmless_threshold"]).round(3),
        ),
    ]
    breaks = []
    if d.threshold_shift is not None:
        breaks.append((plots.threshold_shift_bars(d.threshold_shift),
                       "Refusal modelled as a logistic function of the projection (slope fitted on the source "
                       "languages, one intercept per language). A positive bar: the language needs that much more "
                       "harmfulness signal before it refuses half the time — a quieter alarm."))
    if d.dose is None:
        out.append(Section("4–6. Where does it break? (not run)",
                           "Dose-response, logit attribution, Arditi et al.'s direction selection and the "
                           "interventional transfer take many forward passes per prompt, most of a full run's time; "
                           "<code>lowres-safety diagnose --full</code> adds them.", tuple(breaks)))
    else:
        out.append(_breaks_section(d, breaks))
        out += causal_report.sections(d.causal, first=5)
    if not d.recoverability.empty:
        table = (d.recoverability.groupby(["language", "method", "budget"], sort=False)["balanced_accuracy"]
                 .mean().unstack("budget").round(3).reset_index())
        table.columns = [str(c) for c in table.columns]
        out.append(Section(
            "7. Can a few examples fix it?",
            f"Held-out balanced accuracy in each non-source language after seeing b examples per class of it: the "
            f"high-resource direction with a re-set threshold, the gate ({d.gate}) re-calibrated, a probe trained "
            f"on the target language alone, and two controls (a random direction; the probe on shuffled labels).",
            ((plots.recoverability_curves(d.recoverability),
              "If the direction and gate lines are high from b=1 while the target probe needs many more examples, "
              "the representation was there and only the threshold was off; controls should stay near 0.5."),),
            table,
        ))
    return out



def _breaks_section(d: Diagnosis, breaks: list) -> Section:
    """Section 4 of a full run: the threshold shift (already in ``breaks``), attribution and dose-response."""
    lens = d.attribution.mean("lens")
    comps = d.attribution.mean("components")
    breaks = breaks + [
        (plots.logit_lens_curves(lens),
         f"Refusal ({', '.join(map(repr, d.refusal_tokens))}) minus compliance "
         f"({', '.join(map(repr, d.compliance_tokens))}) logit read from the residual stream after each layer "
         "with the final norm. Where a language's harmful line parts from the reference's is where its decision "
         "diverges."),
        (plots.attribution_by_layer(comps),
         "Direct contribution of each attention (dashed) and MLP (solid) output to the refusal logit difference "
         "at the last prompt token; the components sum to the final logit difference."),
    ]
    if d.divergence is not None:
        a, b = d.divergence_pair
        breaks += [(plots.divergence_bars(d.divergence),
                    f"The components whose contributions differ most between {a} and {b} on the same prompts "
                    f"(harmful); red bars push {a} more towards refusal than {b}."),
                   (plots.head_heatmap(d.attribution.mean("heads"), language=b),
                    f"Per-head direct contribution in {b} (harmful prompts): red heads push towards refusal, blue "
                    "towards compliance.")]
    units = ", ".join(f"layer {layer}: {a:.2f}" for layer, a in d.alpha.items())
    breaks.append((plots.dose_response_curves(d.dose),
                   f"Adding α·v̂ at one layer, α in multiples of that layer's source harmful–harmless spread ({units}): "
                   "top row harmful refusal (up is better), middle harmless refusal (up is over-refusal), "
                   "bottom KL on harmless prompts (utility cost). The α where a language's top curve crosses 50% "
                   "is in the table."))
    note = " ".join(f"({k}: {v})" for k, v in d.notes.items())
    return Section("4. Where does it break?",
                   "Threshold shift, logit attribution and dose-response, on "
                   f"{int(d.dose['n_harmful'].max())} harmful and {int(d.dose['n_harmless'].max())} harmless "
                   f"prompts per language. {note}".strip(),
                   tuple(breaks), d.alpha_half.round(2))
