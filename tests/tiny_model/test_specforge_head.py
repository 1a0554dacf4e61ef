"""scripts/eagle3_specforge.py writes the shipped EAGLE-3 head in SpecForge's layout (the published GLM heads'):
the tensors SpecForge saves with their dtypes and shapes, its draft-vocabulary rule, and a draft that scores each
kept token exactly as the full-vocabulary head does. That vLLM loads and drafts with it: tests/e2e."""

from __future__ import annotations

import collections
import json
import pathlib

import eagle3_specforge
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

ASSETS = pathlib.Path(__file__).resolve().parents[2] / "glm_plugin" / "assets"
HEAD, TARGET = ASSETS / "tiny-glm-eagle3", ASSETS / "tiny-glm"


def tensors(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@settings(max_examples=60, deadline=None)
@given(counts=st.dictionaries(st.integers(0, 63), st.integers(0, 9), max_size=64), size=st.integers(1, 64))
def test_vocab_maps_keep_the_most_frequent_ids_sorted_as_offsets(counts, size):
    d2t, t2d = eagle3_specforge.vocab_maps(collections.Counter(counts), size, 64)
    kept = (torch.arange(size) + d2t).tolist()
    assert d2t.dtype == torch.int64 and t2d.dtype == torch.bool and t2d.shape == (64,)
    assert kept == sorted(set(kept)) and len(kept) == size  # target ids, strictly increasing
    assert torch.nonzero(t2d).flatten().tolist() == kept
    dropped = set(range(64)) - set(kept)
    # nothing dropped is more frequent than anything kept (ids never seen count 0)
    assert max((counts.get(t, 0) for t in dropped), default=0) <= min(counts.get(t, 0) for t in kept)


def test_vocab_size_out_of_range_is_refused():
    with pytest.raises(ValueError, match="--draft-vocab 0 must be between 1 and the target's vocab_size 64"):
        eagle3_specforge.vocab_maps(collections.Counter(), 0, 64)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("specforge")
    counts = collections.Counter({t: 4096 - t for t in range(0, 4096, 3)})  # every third id, low ids first
    eagle3_specforge.convert(str(HEAD), str(TARGET), str(out), 256, counts=counts)
    return out


def test_tensors_are_the_ones_specforge_saves(converted):
    ours, theirs = tensors(HEAD), tensors(converted)
    assert set(theirs) == set(ours) | {"embed_tokens.weight", "d2t", "t2d"}
    assert theirs["lm_head.weight"].shape == (256, 256) and theirs["lm_head.weight"].dtype == torch.bfloat16
    assert theirs["d2t"].shape == (256,) and theirs["t2d"].shape == (4096,)
    assert torch.equal(theirs["embed_tokens.weight"], tensors(TARGET)["model.embed_tokens.weight"])
    for name in set(ours) - {"lm_head.weight"}:
        assert torch.equal(theirs[name], ours[name]), name


def test_draft_logits_are_the_full_heads_at_the_kept_ids(converted):
    ours, theirs = tensors(HEAD), tensors(converted)
    kept = torch.arange(256) + theirs["d2t"]
    assert kept.tolist() == list(range(0, 768, 3))
    hidden = torch.randn(5, 256, dtype=torch.bfloat16)
    assert torch.equal(hidden @ theirs["lm_head.weight"].T, (hidden @ ours["lm_head.weight"].T)[:, kept])


def test_config_is_a_specforge_llama_config_with_the_layers_in_its_convention(converted):
    config = json.loads((converted / "config.json").read_text())
    shipped = json.loads((HEAD / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["vocab_size"], config["draft_vocab_size"]) == (1, 4096, 256)
    assert "target_hidden_size" not in config  # SpecForge writes it only when the widths differ
    assert config["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": [0, 1, 2]}
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == \
        shipped["eagle_config"]["eagle_aux_hidden_state_layer_ids"]


def test_a_head_with_a_draft_vocabulary_already_is_refused(converted, tmp_path):
    with pytest.raises(ValueError, match="already has a reduced draft vocabulary"):
        eagle3_specforge.convert(str(converted), str(TARGET), str(tmp_path), 128, counts=collections.Counter())
