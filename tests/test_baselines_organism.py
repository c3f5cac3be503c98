"""AdaSteer and CAST, as released, act where they should on the organism (slow: real weights, real prompts)."""

import pytest
import torch

from lowres_safety import extract, judges, load_model
from lowres_safety.data import load_polyrefuse
from lowres_safety.generation import generate
from lowres_safety.methods.adasteer import scaled_distance
from lowres_safety.methods.base import Target
from lowres_safety.methods.cast import CastRule, cast_hooks
from lowres_safety.pipelines import steering

SOURCE = ["en", "de", "fr", "es", "it"]


@pytest.mark.slow
def test_adasteer_and_cast_act_where_they_should_on_the_organism(polyrefuse_root):
    model = load_model("organism")
    fit = load_polyrefuse(polyrefuse_root, SOURCE, split="train", n_per_class=16, seed=0)
    fitted = steering.fit_methods(model, extract(model, fit, "all", ("t_post_inst",), progress=False), SOURCE,
                                  layer=10, seed=0)
    val = load_polyrefuse(polyrefuse_root, ["en"], split="val", n_per_class=8, seed=0)
    harmful = val.labels == 1
    tokens = judges.first_token_ids(model.tokenizer, judges.DEFAULT_OPENINGS)
    base = judges.refusal_score(model, val, tokens)

    condition, rule, behaviour = fitted.methods["cast"].zero_shot
    always = judges.refusal_score(model, val, tokens, cast_hooks(condition, CastRule(rule.layer, 2.0, "larger", 0.0),
                                                                     behaviour))
    never = judges.refusal_score(model, val, tokens, cast_hooks(condition, CastRule(rule.layer, -2.0, "larger", 0.0),
                                                                    behaviour))
    assert torch.equal(never, base)  # a condition that never fires changes nothing
    assert float((always - base).mean()) > 0.1  # where it fires, 1.5·b̂ pushes towards refusal (measured +0.35)

    ada = fitted.methods["adasteer"]
    vacts = extract(model, val, "all", ("t_post_inst",), progress=False)
    alpha_layer, alpha_rule, _, _ = ada.rules_for(0)
    s = scaled_distance(vacts.at(alpha_layer, "t_post_inst").float(), ada.vectors.mu_a[alpha_layer],
                        ada.vectors.mu_b[alpha_layer])
    # zero-shot RD points toward compliance (upstream's meaning): the push toward harmful is −coefficient·|RD|²
    toward_harmful = -alpha_rule(s).numpy()
    assert toward_harmful.min() >= 0  # never toward compliance
    assert toward_harmful[harmful].mean() > 5 * toward_harmful[~harmful].mean()  # steers harmful prompts, not harmless
    plain = generate(model, val, [], max_new_tokens=16, progress=False)["completion"].to_numpy()
    steered = generate(model, val, ada.hooks(Target("en", vacts, vacts), 0), max_new_tokens=16,
                       progress=False)["completion"].to_numpy()
    assert (plain[harmful] != steered[harmful]).any()  # its vectors reach the generated tokens
