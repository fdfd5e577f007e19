"""Few-shot prompting (method=few_shot, Table 8): the cached prompt gives the logits of one whole forward pass, the
demonstrations are drawn per class with the seed, bad prompts fail with one line, and the job writes a record that
trains nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lora_repro.errors import UserError
from lora_repro.methods import few_shot as fs
from lora_repro.methods import get_method
from lora_repro.tasks import get_task


def tiny_llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=128))


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_cached_prompt_gives_the_logits_of_one_forward_pass(build):
    model = build().eval()
    prefix = torch.randint(0, 64, (20,))
    queries = [torch.randint(0, 64, (n,)) for n in (3, 7, 1, 5)]
    words = [5, 9, 11]
    cached = fs.label_logits(model, prefix, queries, words, progress=False)
    with torch.no_grad():
        whole = np.stack([model(torch.cat([prefix, q])[None]).logits[0, -1, words].numpy() for q in queries])
    np.testing.assert_allclose(cached, whole, rtol=1e-4, atol=1e-4)
    # the cache is back to the prefix after every query: the order of the queries does not matter
    again = fs.label_logits(model, prefix, queries[::-1], words, progress=False)[::-1]
    np.testing.assert_allclose(again, cached, rtol=1e-4, atol=1e-4)


def test_demonstrations_are_per_class_shuffled_and_seeded():
    train = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(40)], "label": [i % 4 == 0 for i in range(40)]})
    train = train.cast_column("label", datasets.Value("int64"))
    chosen = fs.demonstrations(train, 3, 2, seed=0)
    labels = [train[i]["label"] for i in chosen]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1] and len(set(chosen)) == 6
    assert labels != sorted(labels) or fs.demonstrations(train, 3, 2, seed=1) != chosen  # shuffled, seed-dependent
    assert fs.demonstrations(train, 3, 2, seed=0) == chosen
    assert len({tuple(fs.demonstrations(train, 3, 2, seed=s)) for s in range(5)}) > 1
    with pytest.raises(UserError, match=r"only \{1: 10\} examples"):
        fs.demonstrations(train, 11, 2, seed=0)


def test_bad_prompts_fail_with_one_line():
    sst2, stsb = get_task("sst2"), get_task("stsb")
    assert fs.prompt_settings({}, sst2) == ("Review: {sentence}\nSentiment:", [" negative", " positive"], "\n\n")
    assert fs.prompt_settings({"template": "Text: {sentence}\nMood:"}, sst2)[0] == "Text: {sentence}\nMood:"
    with pytest.raises(UserError, match="task 'stsb' has none"):
        fs.prompt_settings({}, stsb)
    with pytest.raises(UserError, match="1 label words .* task sst2 has 2 labels"):
        fs.prompt_settings({"label_words": [" bad"]}, sst2)
    with pytest.raises(UserError, match=r"lacks the field\(s\) \['sentence'\]"):
        fs.prompt_settings({"template": "Review: {text}"}, sst2)
    with pytest.raises(UserError, match="shots_per_class must be an integer"):
        get_method("few_shot").validate({"name": "few_shot", "shots_per_class": -1})


def test_the_job_prompts_the_lm_head_and_trains_nothing(tmp_path):
    """One smoke job through ``python -m lora_repro``: the method's evaluate hook replaces the training loop and
    the model is a causal LM although SST-2 is a classification task."""
    command = [sys.executable, "-m", "lora_repro", "+experiment=table8_fewshot", "hydra.mode=RUN", "smoke=true",
               "method=few_shot", "seed=1", f"output_root={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("table8_fewshot/*few_shot*/seed1/results.json")
    record = json.loads(path.read_text())
    assert record["status"] == "complete" and record["method"] == "few_shot"
    assert record["parameters"]["trainable"] == 0 and record["global_steps"] == 0
    assert 0 <= record["best"]["metrics"]["accuracy"] <= 100
    assert len(record["prompt"]["demonstrations"]) == 4 and record["prompt"]["prefix_tokens"] > 0
    assert not (path.parent / "method").exists()  # nothing trained, nothing saved
    assert record["eval_label_counts"]["validation"]
