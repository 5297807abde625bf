"""The Conditioner is the one path from prompts to context (ldm/prompts/conditioner.py).

Equivalence: for short prompts it gives bit-identical context (torch.equal) to the two paths it replaced,
in training (the embedding manager's splice: placeholders, multi-vector, per-image tokens, progressive
words, "*." glued to punctuation, gradients) and in inference (library terms, a negative prompt). The old
code is deleted, so `reference_context` below is a minimal copy of its semantics; it was checked by hand
against the old `EmbeddingManager.encode` on these prompts before the old code went. Then what is new:
captions past 75 tokens are chunked (154 positions), matching is longest first in training too, padding
after the EOS is the tokenizer's pad id (0 for OpenCLIP), and the context cache never goes stale.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import pytest
import torch
from sd_helpers import randomize_

from ldm.data.templates import PER_IMAGE_TOKENS
from ldm.embeddings import LoadedEmbedding
from ldm.embeddings.library import EmbeddingLibrary
from ldm.modules.embedding_manager import EmbeddingManager
from ldm.prompts import Conditioner


def reference_context(embedder, prompts: Sequence[str], learned: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The old path: each prompt as 77 ids (BOS, tokens, EOS padding), every word of `learned` (word ->
    vectors [n, D]) taking n positions that hold its vectors, then `encode_embeddings`. Test prompts never
    glue a word into a longer word, so cutting the text at literal occurrences is all the matching needed."""
    tok = embedder.tokenizer
    words = sorted(learned, key=len, reverse=True)
    pattern = re.compile("(" + "|".join(re.escape(w) for w in words) + ")") if words else None
    rows, slots = [], []
    for b, prompt in enumerate(prompts):
        ids = [tok.bos_token_id]
        for part in pattern.split(prompt) if pattern else [prompt]:
            if part in learned:
                slots += [(b, len(ids) + v, learned[part][v]) for v in range(len(learned[part]))]
                ids += [tok.eos_token_id] * len(learned[part])
            elif part:
                ids += tok(part, add_special_tokens=False)["input_ids"]
        ids.append(tok.eos_token_id)
        rows.append(ids + [tok.eos_token_id] * (embedder.max_length - len(ids)))
    emb = embedder.token_embedding
    embeds = emb(torch.tensor(rows, device=emb.weight.device))
    if slots:
        index = (torch.tensor([b for b, _, _ in slots]), torch.tensor([p for _, p, _ in slots]))
        embeds = embeds.index_put(index, torch.stack([v for _, _, v in slots]).to(embeds.dtype))
    return embedder.encode_embeddings(embeds)


@pytest.fixture(scope="module")
def _embedder(tiny_model):
    encoder = copy.deepcopy(tiny_model.cond_stage_model)
    _ = encoder.tokenizer  # load the vocabulary once; the copies share it
    return encoder


@pytest.fixture
def embedder(_embedder):
    return copy.deepcopy(_embedder)


def training_conditioner(manager: EmbeddingManager) -> Conditioner:
    """What LatentDiffusion.prompt_conditioner builds: the manager's words as terms, captions read literally."""
    return Conditioner(
        SimpleNamespace(cond_stage_model=manager.embedder, embedding_manager=manager), prompt_syntax=False
    )


def active(manager: EmbeddingManager) -> dict[str, torch.Tensor]:
    return {s: manager.learned[i][: manager.num_active(i)] for i, s in enumerate(manager.placeholders)}


TRAINING_CASES = {
    "placeholder": (dict(placeholder_strings=["*"], initializer_words=["sculpture"]), None,
                    ["a photo of *", "a painting of a dog"]),
    "multi-vector": (dict(placeholder_strings=["*", "<other>"], initializer_words=["sculpture", "dog"],
                          num_vectors_per_token=2), None, ["a photo of *", "* on a beach"]),
    "multi-token word": (dict(placeholder_strings=["<my-cat>"], initializer_words=["cat"], num_vectors_per_token=3),
                         None, ["a <my-cat> on a sofa.", "<my-cat>"]),
    "per-image tokens": (dict(placeholder_strings=["*"], initializer_words=["dog"], per_image_tokens=True), None,
                         [f"a photo of * with {PER_IMAGE_TOKENS[2]}", f"{PER_IMAGE_TOKENS[0]} *"]),
    "progressive words": (dict(placeholder_strings=["*"], initializer_words=["sculpture"], num_vectors_per_token=3,
                               progressive_words=True), 2500, ["a photo of *", "a * and a *"]),
    "glued to punctuation": (dict(placeholder_strings=["*"], initializer_words=["sculpture"]), None,
                             ["a photo of *.", "*, a drawing", ""]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_training_context_and_gradients_are_the_old_paths(embedder, case):
    kwargs, step, prompts = TRAINING_CASES[case]
    m = EmbeddingManager(embedder, **kwargs)
    if step is not None:
        m.set_step(step)
    with torch.no_grad():
        for p in m.learned:
            p.normal_()
    new = training_conditioner(m)(prompts)["crossattn"]
    old = reference_context(embedder, prompts, active(m))
    assert new.shape == (len(prompts), 77, 32) and torch.equal(new, old)

    target = torch.randn_like(new)
    (new - target).pow(2).mean().backward()
    new_grads = [None if p.grad is None else p.grad.clone() for p in m.learned]
    m.zero_grad(set_to_none=True)
    (reference_context(embedder, prompts, active(m)) - target).pow(2).mean().backward()
    used = [any(re.search(re.escape(s), p) for p in prompts) for s in m.placeholders]
    for i, (grad, ref) in enumerate(zip(new_grads, m.learned)):
        if used[i]:
            assert grad is not None and grad.abs().sum() > 0 and torch.equal(grad, ref.grad)
        else:  # absent words stay out of the graph: AdamW leaves them alone
            assert grad is None and ref.grad is None
    assert all(p.grad is None for p in embedder.parameters())


def test_model_conditioner_is_the_training_path_and_apply_model_takes_its_dict(tiny_model):
    model = copy.deepcopy(tiny_model)
    params = dict(placeholder_strings=["*"], initializer_words=["sculpture"], num_vectors_per_token=2)
    model.attach_embedding_manager({"target": "ldm.modules.embedding_manager.EmbeddingManager", "params": params})
    prompts = ["a photo of *", "a (cat) [on] a sofa"]  # captions are literal: brackets are text, not emphasis
    cond = model.prompt_conditioner(prompts)
    assert set(cond) == {"crossattn"}
    old = reference_context(model.cond_stage_model, prompts, active(model.embedding_manager))
    assert torch.equal(cond["crossattn"], old) and torch.equal(model.get_learned_conditioning(prompts), old)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.equal(model.apply_model(x, t, cond), model.apply_model(x, t, cond["crossattn"]))


def make_library(**terms: torch.Tensor) -> EmbeddingLibrary:
    lib = EmbeddingLibrary(32)
    for name, vectors in terms.items():
        lib.add(LoadedEmbedding(name, vectors))
    return lib


def test_inference_with_library_terms_and_negative_prompt_is_the_old_path(tiny_model):
    g = torch.Generator().manual_seed(3)
    lib = make_library(redthing=torch.randn(2, 32, generator=g), uglything=torch.randn(1, 32, generator=g))
    conditioner = Conditioner(tiny_model, lib)
    prompts = ["a photo of redthing on a sofa", "uglything, blurry"]  # [prompt, negative] as Generate batches
    with torch.no_grad():
        new = conditioner(prompts)["crossattn"]
        old = reference_context(tiny_model.cond_stage_model, prompts, {n: lib.get(n).vectors for n in lib.names()})
        assert torch.equal(new, old)
        plain = ["a cat", ""]  # no terms: exactly the text encoder's own output
        assert torch.equal(conditioner(plain)["crossattn"], tiny_model.cond_stage_model.encode(plain))


def test_long_training_caption_gives_two_chunks_instead_of_a_cut(embedder):
    m = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=2)
    caption = "a photo of * " + "red " * 90  # 3 + 2 + 90 = 95 positions: 75 in chunk 0, 20 in chunk 1
    z = training_conditioner(m)([caption])["crossattn"]
    assert z.shape == (1, 154, 32)
    first, second = "a photo of * " + "red " * 70, "red " * 20
    assert torch.equal(z.reshape(2, 77, 32), reference_context(embedder, [first, second], active(m)))
    z.sum().backward()
    assert m.vectors("*").grad.abs().sum() > 0


def test_training_matching_is_longest_first(embedder):
    m = EmbeddingManager(embedder, ["cat", "<cat>"], ["dog", "fox"])  # one contains the other: allowed now
    with torch.no_grad():
        for p in m.learned:
            p.normal_()
    conditioner = training_conditioner(m)
    assert conditioner.used_embeddings("a <cat> and a cat") == ["<cat>", "cat"]
    prompts = ["a <cat> and a cat", "<cat>"]
    assert torch.equal(conditioner(prompts)["crossattn"], reference_context(embedder, prompts, active(m)))


def test_open_clip_chunks_pad_with_zero_after_the_eos():
    from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder

    torch.manual_seed(1)
    enc = randomize_(FrozenOpenCLIPEmbedder(layer="penultimate", text_config=dict(width=32, layers=3, heads=4)), 1)
    seen = []
    enc.token_embedding.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    conditioner = Conditioner(SimpleNamespace(cond_stage_model=enc))
    prompt = "a photograph of an astronaut riding a horse"
    content = enc.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        z = conditioner([prompt, prompt + " BREAK on the moon"])["crossattn"]
        ids = seen[-1]
        assert ids.shape == (4, 77)  # two prompts x two chunks (the first padded with an empty chunk)
        assert ids[0].tolist() == [enc.tokenizer.bos_token_id, *content, enc.tokenizer.eos_token_id] + [0] * (
            75 - len(content)
        )
        assert ids[1].tolist()[:2] == [enc.tokenizer.bos_token_id, enc.tokenizer.eos_token_id]
        assert ids[1, 2:].eq(0).all() and ids[3, 4] == enc.tokenizer.eos_token_id and ids[3, 5:].eq(0).all()
        assert torch.equal(z[:1, :77], enc.encode([prompt]))  # what SD 2.x was trained with


def test_cache_follows_in_place_edits_swaps_and_progressive_steps(embedder):
    m = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=3, progressive_words=True)
    conditioner = training_conditioner(m)
    prompts = ["a photo of *"]

    def fresh() -> torch.Tensor:
        return training_conditioner(m)(prompts)["crossattn"]

    with torch.no_grad():
        base = conditioner(prompts)["crossattn"]
        assert conditioner(prompts)["crossattn"] is base  # cached while nothing changes
        m.vectors("*").add_(0.5)  # an optimizer step is an in-place edit
        assert torch.equal(conditioner(prompts)["crossattn"], fresh()) and not torch.equal(fresh(), base)
        m.set_step(2000)  # a second vector becomes active
        assert torch.equal(conditioner(prompts)["crossattn"], fresh())
        m.load(LoadedEmbedding("*", torch.randn(2, 32)))  # compare_embeddings: a snapshot of another length
        assert torch.equal(conditioner(prompts)["crossattn"], fresh())


def test_cache_is_not_fooled_by_a_reused_id(tiny_model):
    """Replacing a term's tensor frees the old one; a new tensor may get its id. No stale context ever."""
    lib = make_library(redthing=torch.randn(1, 32))
    conditioner = Conditioner(tiny_model, lib)
    term = lib.get("redthing")
    with torch.no_grad():
        for i in range(20):
            term.vectors = torch.full((1, 32), float(i))
            got = conditioner(["a redthing"])["crossattn"]
            assert torch.equal(got, Conditioner(tiny_model, lib)(["a redthing"])["crossattn"]), i
