"""The hand-built copy circuit of ``scripts/tinyglm/circuit.py`` copies before any training.

Why: the bundled checkpoint can only copy unseen entities into tool arguments because training starts
from this circuit (docs/tiny-model.md); if a change to the model code or the initialisation broke it,
a retrained checkpoint would silently stop copying. Also checks that the bundled checkpoint still
carries the circuit's fixed weights.
"""

import pathlib
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import glm_plugin  # noqa: E402
from tinyglm import circuit as C  # noqa: E402
from tinyglm import model as M  # noqa: E402

ASSET = pathlib.Path(glm_plugin.__file__).parent / "assets" / "tiny-glm"


@pytest.fixture(scope="module")
def wired():
    return _fresh()


def _fresh(wire=True, **options):
    model = M.TinyGlm(dict(M.MODEL_CONFIG))
    model.init_weights(torch.Generator().manual_seed(1))
    if wire:
        C.install_copy_circuit(model, **options)
        if options.get("retrieval", True):
            C.set_retrieval_gain(model, C.RETRIEVAL_START_GAIN)  # as training starts, before the ramp
    return model


def _repeat_accuracy(model, seed, alphabet=None):
    """Top-1 accuracy on the second copy of random token sequences (tokens never seen in training);
    with `alphabet`, each sequence draws from that many tokens, so tokens recur as digits do."""
    rng = random.Random(seed)
    hits = total = 0
    with torch.no_grad():
        for _ in range(8):
            pool = [rng.randrange(20, 4096) for _ in range(alphabet or 4076)]
            x = [rng.choice(pool) for _ in range(rng.randint(10, 40))]
            ids = torch.tensor([[1, 2] + x + [5] + x])
            L = ids.shape[1]
            h, _ = model.trunk(ids, torch.arange(L)[None], M.causal_doc_mask(torch.zeros_like(ids)))
            pred = model.lm_head(h[0]).argmax(-1)
            start = 2 + len(x) + 1  # first token of the repeat; predict from its second token on
            hits += (pred[start:L - 1] == ids[0, start + 1:]).sum().item()
            total += L - 1 - start
    return hits / total


def test_positional_heads_attend_one_and_two_tokens_back():
    c = M.MODEL_CONFIG
    d = c["head_dim"]
    *_, worst = C.positional_query_keys(c["rope_theta"], d, int(d * c["partial_rotary_factor"]))
    assert worst > 0.9


def test_fresh_model_copies_only_with_the_circuit(wired):
    assert _repeat_accuracy(_fresh(wire=False), 3) < 0.05
    assert _repeat_accuracy(wired, 3) > 0.9


def test_bigram_head_disambiguates_recurring_tokens():
    unigram = _repeat_accuracy(_fresh(bigram=False, retrieval=False), 3, alphabet=30)
    both = _repeat_accuracy(_fresh(bigram=True, retrieval=False), 3, alphabet=30)
    assert both > 0.75 and both > unigram + 0.2, (unigram, both)


def test_retrieval_heads_copy_what_they_attend_to():
    """Layers 2-3 head 0: whatever the (trainable) query/key pick, the output names that token."""
    d = M.MODEL_CONFIG["head_dim"]
    wired = _fresh(retrieval=True)
    for i in (2, 3):
        a = wired.layers[i].self_attn
        token = wired.embed_tokens.weight[123]
        out = a.o_proj.weight[:, :d] @ (a.v_proj.weight[:d] @ token + a.v_proj.bias[:d])
        assert wired.lm_head(out).argmax().item() == 123


def _owned_slices_of_asset():
    """(checkpoint key, index, value) for every slice the circuit owns, for the options the asset was trained with."""
    import json

    recipe = json.loads((ASSET / "training_meta.json").read_text())["training"]
    model = _fresh(wire=False)
    owned = C.install_copy_circuit(model, bigram=recipe["bigram"], retrieval=recipe["retrieval"],
                                   retrieval_gain=recipe["retrieval_gain"])
    names = {id(p): n for n, p in model.named_parameters()}
    return [("model." + names[id(param)], idx, value) for param, idx, value in owned]  # all under model.*


def _slices_that_differ(weights, owned):
    """Exact comparison is sound here: the owned values are constants or the stored positional solution, rounded to
    bf16 the same way on every CPU (nothing is solved or trained on this machine)."""
    return [key for key, idx, value in owned
            if not torch.equal(weights[key].float()[idx], value.to(torch.bfloat16).float())]


def test_bundled_checkpoint_keeps_the_circuit_slices():
    """Every slice the circuit owns is in the asset as installed (training restores them after every step)."""
    from safetensors.torch import load_file

    assert _slices_that_differ(load_file(str(ASSET / "model.safetensors")), _owned_slices_of_asset()) == []


def test_one_bf16_step_in_an_owned_slice_is_caught():
    """The asset check is exact, not tolerant: moving one owned slice by one bf16 step fails it."""
    from safetensors.torch import load_file

    owned = _owned_slices_of_asset()
    for key, idx, _ in (owned[2], owned[-1]):  # a solved positional gain, a constant retrieval path
        weights = load_file(str(ASSET / "model.safetensors"))
        weights[key][idx] = _one_bf16_step_up(weights[key][idx])
        assert _slices_that_differ(weights, owned) == [key]


def _one_bf16_step_up(x):
    """The next bf16 value above each element (bit pattern + 1 for positives, - 1 for negatives, +0 -> tiny)."""
    bits = x.contiguous().view(torch.int16).clone()
    bits += torch.where(x >= 0, 1, -1).to(torch.int16)
    bits[x == 0] = 1
    return bits.view(torch.bfloat16)
