"""Generation: batched greedy equals unbatched (with and without hooks), routing columns, sampling seeds."""

import pytest
import torch
from helpers import build_model

from lowres_safety import hooks as H
from lowres_safety.data import load_builtin
from lowres_safety.evaluation import first_token_ids, measure_refusal, refusal_log_odds
from lowres_safety.gate import Gate
from lowres_safety.generation import generate, generate_scored, next_token_logprobs, stop_token_ids
from lowres_safety.judges import LogitJudge


@pytest.fixture(scope="module")
def tiny():
    return build_model("llama")


def one_by_one(model, prompts, hooks, n):
    return [generate(model, prompts.where(id=i), hooks, max_new_tokens=n, progress=False)["completion"].iloc[0]
            for i in prompts.frame["id"]]


def test_batched_greedy_equals_unbatched_on_a_tiny_model(tiny):
    prompts = load_builtin(["en", "yo"], n_per_class=3)
    v = torch.randn(tiny.cfg.d_model)
    for hooks in ([], H.add(v, 3.0, 1, scope="from_last") + H.ablate(v, [2])):
        batched = generate(tiny, prompts, hooks, max_new_tokens=8, batch_size=12, progress=False)
        assert batched["completion"].tolist() == one_by_one(tiny, prompts, hooks, 8)
        assert (batched["n_new_tokens"] <= 8).all()


def test_batched_greedy_equals_unbatched_on_the_default_model(default_model):
    prompts = load_builtin(["en", "sw"], n_per_class=2)
    v = torch.randn(default_model.cfg.d_model)
    for hooks in ([], H.add(v, 4.0, 12, scope="from_last")):
        batched = generate(default_model, prompts, hooks, max_new_tokens=10, batch_size=8, progress=False)
        assert batched["completion"].tolist() == one_by_one(default_model, prompts, hooks, 10)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_unhooked_generation_from_the_shared_prefix_equals_the_whole_prompt(family):
    # unhooked, the prompts' common opening runs once as a KV cache; a no-op hook turns that off
    model = build_model(family)
    prompts = load_builtin(["en", "yo"], n_per_class=3)
    noop = [("blocks.0.hook_resid_post", lambda act, hook: act)]
    fast, first = generate_scored(model, prompts, max_new_tokens=8, batch_size=4, progress=False)
    plain, ref = generate_scored(model, prompts, noop, max_new_tokens=8, batch_size=4, progress=False)
    assert fast["completion"].tolist() == plain["completion"].tolist()
    assert fast["n_new_tokens"].sum() > len(prompts)  # not all stopped at once
    torch.testing.assert_close(first, ref, atol=1e-4, rtol=0)


def test_routing_columns_report_each_rows_decision(tiny):
    from lowres_safety import extract

    prompts = load_builtin(["en", "de"], n_per_class=4)
    acts = extract(tiny, prompts, [1], ("t_post_inst",), progress=False)
    gate = Gate(rank=2).fit(acts, 1, "t_post_inst", ["en", "de"])
    out = generate(tiny, prompts, H.route(gate, torch.randn(tiny.cfg.d_model), 2.0, n_layers=tiny.cfg.n_layers),
                   max_new_tokens=3, batch_size=5, progress=False)
    expected = gate.margin(acts)
    torch.testing.assert_close(torch.tensor(out["gate_score"].tolist()), expected, atol=1e-4, rtol=1e-4)
    assert out["ablated"].tolist() == (expected <= 0).tolist()
    assert ((out["alpha"] > 0) == ~out["ablated"]).all()
    assert list(out.columns[:6]) == ["id", "text", "language", "subset", "split", "source_id"]


def test_sampling_is_reproducible_from_the_seed(tiny):
    prompts = load_builtin(["en"], n_per_class=2)
    a = generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=1, progress=False)["completion"].tolist()
    b = generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=1, progress=False)["completion"].tolist()
    c = generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=2, progress=False)["completion"].tolist()
    assert a == b and a != c


def test_generation_stops_at_end_of_turn(tiny):
    eos = stop_token_ids(tiny)[0]
    steps = []

    def force_eos_on_second_token(act, hook):
        if H.is_decoding():
            steps.append(1)
            if len(steps) == 1:
                act = act.clone()
                act[..., eos] = 1e4
        return act

    out = generate(tiny, ["Hello there"], [("unembed.hook_out", force_eos_on_second_token)], max_new_tokens=10,
                   progress=False)
    assert out["n_new_tokens"].iloc[0] == 1 and bool(out["finished"].iloc[0])


def test_next_token_logprobs_match_a_plain_forward(tiny):
    from lowres_safety.models import encode_chat

    logp = next_token_logprobs(tiny, ["How are you?", "Say something long and friendly please"])
    ids = torch.tensor([encode_chat(tiny.tokenizer, "How are you?").ids])
    with torch.no_grad():
        ref = torch.log_softmax(tiny(ids)[0, -1], -1)
    torch.testing.assert_close(logp[0], ref, atol=1e-4, rtol=1e-4)


def test_generate_scored_gives_the_prefill_logprobs_and_the_same_text(tiny):
    prompts = load_builtin(["en", "yo"], n_per_class=3)
    hooks = H.add(torch.randn(tiny.cfg.d_model), 3.0, 1, scope="from_last")
    frame, first = generate_scored(tiny, prompts, hooks, max_new_tokens=5, batch_size=4, progress=False)
    assert frame.equals(generate(tiny, prompts, hooks, max_new_tokens=5, batch_size=4, progress=False))
    torch.testing.assert_close(first, next_token_logprobs(tiny, prompts, hooks, batch_size=3), atol=1e-4, rtol=0)
    # the logit judge reading them agrees with its own prefill pass; a threshold between two scores
    # makes some prompts refused and some not
    tokens = first_token_ids(tiny.tokenizer, ["I'm sorry", "Sorry"])
    odds = refusal_log_odds(first, prompts, tokens).sort().values
    judge = LogitJudge(tokens, threshold=float(odds[len(odds) // 2 - 1: len(odds) // 2 + 1].mean()))
    assert judge.from_logprobs(first, prompts, tiny.tokenizer).sum() == len(prompts) // 2
    frame, first = generate_scored(tiny, prompts, max_new_tokens=5, batch_size=4, progress=False)  # unhooked,
    read = measure_refusal(tiny, prompts, frame, logit=judge, first_logprobs=first)  # as measure_refusal scores
    again = measure_refusal(tiny, prompts, frame, logit=judge)
    assert read.equals(again)
    with pytest.raises(ValueError, match="rows for"):
        measure_refusal(tiny, prompts, frame, logit=judge, first_logprobs=first[:2])


def test_bad_generation_settings(tiny):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny, ["hi"], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny, ["hi"], temperature=0.0)
    with pytest.raises(ValueError, match="width"):
        generate(tiny, ["hi"], H.add(torch.randn(3), 1.0, 0), max_new_tokens=2, progress=False)
    assert all(len(hp._forward_hooks) == 0 for hp in tiny.hook_dict.values())
