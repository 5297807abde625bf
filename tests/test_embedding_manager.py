"""EmbeddingManager on the tiny CLIP (real tokenizer, hidden 32): through the conditioner its learned
vectors land at the right positions, gradients reach only them, init/validation/progressive/regulariser
behave, and the vectors survive save -> load."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace

import pytest
import torch

from ldm.embeddings import EmbeddingFileError, LoadedEmbedding, read_embedding_file, write_embedding_file
from ldm.errors import ConfigError
from ldm.modules.embedding_manager import EmbeddingManager
from ldm.prompts import Conditioner

BOS, EOS, STAR = 49406, 49407, 265


@pytest.fixture(scope="module")
def _embedder(tiny_model):
    encoder = copy.deepcopy(tiny_model.cond_stage_model)
    _ = encoder.tokenizer  # load the vocabulary once; the copies below share the loaded tokenizer state
    return encoder


@pytest.fixture
def embedder(_embedder):
    return copy.deepcopy(_embedder)


def ids_of(embedder, text: str) -> list[int]:
    return embedder.tokenizer(text, add_special_tokens=False)["input_ids"]


def token_rows(embedder, ids: list[int]) -> torch.Tensor:
    return embedder.text_model.embeddings.token_embedding.weight[ids].detach()


def layout(embedder, content: list[int], length: int = 77) -> list[int]:
    return [BOS] + content + [EOS] * (length - 1 - len(content))


def conditioner(m: EmbeddingManager) -> Conditioner:
    """The training path: the manager's placeholders are the conditioner's terms, captions literal."""
    return Conditioner(SimpleNamespace(cond_stage_model=m.embedder, embedding_manager=m), prompt_syntax=False)


def encode(m: EmbeddingManager, prompts: list[str]) -> torch.Tensor:
    return conditioner(m)(prompts)["crossattn"]


def splice(m: EmbeddingManager, prompts: list[str]) -> tuple[torch.Tensor, list[list[tuple[str, int]]]]:
    """(the token embeddings the text encoder gets [B, 77 * k, D], per prompt the (placeholder, position)
    of every learned vector in them)."""
    c, seen = conditioner(m), []
    real = m.embedder.encode_embeddings
    m.embedder.encode_embeddings = lambda embeds: seen.append(embeds) or real(embeds)
    try:
        c(prompts)
    finally:
        del m.embedder.encode_embeddings
    k = len(seen[0]) // len(prompts)
    where = []
    for prompt in prompts:
        slots = [(chunk, slot) for chunk, ch in enumerate(c.chunks(prompt)) for slot in ch.layout(BOS, EOS, 75)[2]]
        where.append([(ref.name, 77 * chunk + pos) for chunk, (pos, ref, _) in slots])
    return seen[0].reshape(len(prompts), k * 77, -1), where


def test_splice_puts_vectors_at_placeholder_positions(embedder):
    m = EmbeddingManager(embedder, ["*"], ["sculpture"])
    with torch.no_grad():
        m.vectors("*").normal_()
    embeds, where = splice(m, ["a photo of *", "a painting of a dog"])
    assert embeds.shape == (2, 77, 32) and where == [[("*", 4)], []]
    assert torch.equal(embeds[0, 4], m.vectors("*")[0].detach())
    expected = token_rows(embedder, embedder.tokenize(["a photo of *", "a painting of a dog"]).flatten().tolist())
    expected = expected.view(2, 77, 32)
    keep = torch.ones(2, 77, dtype=torch.bool)
    keep[0, 4] = False
    assert torch.equal(embeds[keep], expected[keep])
    # Without placeholders the conditioning is exactly the plain encoder's.
    assert torch.equal(encode(m, ["a painting of a dog"]), embedder.encode(["a painting of a dog"]))


def test_multi_token_placeholder_with_three_vectors_shifts_the_rest(embedder):
    m = EmbeddingManager(embedder, ["<my-cat>"], ["cat"], num_vectors_per_token=3)
    assert len(ids_of(embedder, "<my-cat>")) == 5  # several CLIP tokens, matched as a sequence
    with torch.no_grad():
        m.vectors("<my-cat>").normal_()
    embeds, where = splice(m, ["a <My-Cat> on a sofa."])
    assert where == [[("<my-cat>", 2), ("<my-cat>", 3), ("<my-cat>", 4)]]
    assert torch.equal(embeds[0, 2:5], m.vectors("<my-cat>").detach())
    rest = ids_of(embedder, "on a sofa.")
    assert torch.equal(embeds[0, 5 : 5 + len(rest)], token_rows(embedder, rest))
    tail = 5 + len(rest)
    assert torch.equal(embeds[0, tail:], token_rows(embedder, [EOS] * (77 - tail)))
    assert torch.equal(embeds[0, 0:2], token_rows(embedder, [BOS] + ids_of(embedder, "a")))


def test_placeholder_glued_to_punctuation_is_found_but_not_inside_words(embedder):
    m = EmbeddingManager(embedder, ["*", "ajaj"], ["dog", "cat"])
    _, where = splice(m, ["a photo of *.", "ajaj, ajajs and ajaj!"])
    assert where[0] == [("*", 4)]
    assert [p for p, _ in where[1]] == ["ajaj", "ajaj"]  # "ajajs" is another word


@pytest.mark.parametrize("fillers,fits", [(72, True), (73, False)])
def test_placeholder_at_the_75_token_limit_moves_whole_to_the_next_chunk(embedder, fillers, fits):
    m = EmbeddingManager(embedder, ["<my-cat>"], ["cat"], num_vectors_per_token=3)
    prompt = "a " * fillers + "<my-cat> and more words"
    embeds, where = splice(m, [prompt])
    a = ids_of(embedder, "a")[0]
    if fits:
        assert where == [[("<my-cat>", 73), ("<my-cat>", 74), ("<my-cat>", 75)]]
        assert torch.equal(embeds[0, 76], token_rows(embedder, [EOS])[0])
    else:  # never cut in half, never dropped: its vectors open the second chunk
        assert where == [[("<my-cat>", 78), ("<my-cat>", 79), ("<my-cat>", 80)]]
        assert torch.equal(embeds[0, :77], token_rows(embedder, layout(embedder, [a] * fillers)))
        rest = ids_of(embedder, "and more words")
        assert torch.equal(embeds[0, 81 : 81 + len(rest)], token_rows(embedder, rest))


def test_gradients_reach_only_the_vectors(embedder):
    m = EmbeddingManager(embedder, ["*", "<other>"], ["sculpture", "dog"], num_vectors_per_token=2)
    before = copy.deepcopy(embedder.state_dict())
    target = torch.randn(2, 77, 32)
    opt = torch.optim.AdamW(m.embedding_parameters(), lr=0.1)
    loss = (encode(m, ["a photo of *", "* on a beach"]) - target).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in embedder.parameters())
    assert m.vectors("*").grad is not None and m.vectors("*").grad.abs().sum() > 0
    assert m.vectors("<other>").grad is None  # not in any prompt
    start = m.vectors("*").detach().clone()
    opt.step()
    assert not torch.equal(m.vectors("*").detach(), start)
    after = embedder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(m.state_dict()) == {"learned.0", "learned.1", "initial_0", "initial_1"}


def test_low_precision_encoder_keeps_float32_vectors(embedder):
    embedder.to(torch.bfloat16)
    m = EmbeddingManager(embedder, ["*"], ["sculpture"])
    assert m.vectors("*").dtype == torch.float32
    out = encode(m, ["a photo of *"])
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert m.vectors("*").grad.dtype == torch.float32 and m.vectors("*").grad.abs().sum() > 0


def test_init_text_of_several_tokens_fills_vectors_in_order(embedder):
    red, fox = ids_of(embedder, "red fox")
    m = EmbeddingManager(embedder, ["*", "<b>", "<c>"], ["red fox", "red fox", "sculpture"], num_vectors_per_token=4)
    assert torch.equal(m.vectors("*").detach(), token_rows(embedder, [red, red, fox, fox]))
    assert torch.equal(m.initial_vectors("<b>"), token_rows(embedder, [red, red, fox, fox]))
    one = EmbeddingManager(embedder, ["*"], ["red fox"])
    assert torch.equal(one.vectors("*").detach(), token_rows(embedder, [red]))


def test_missing_init_text_gives_small_random_vectors(embedder, caplog):
    with caplog.at_level(logging.WARNING):
        m = EmbeddingManager(embedder, ["*"], None, num_vectors_per_token=2)
    assert "no initializer word" in caplog.text
    v = m.vectors("*").detach()
    scale = embedder.text_model.embeddings.token_embedding.weight.std()
    assert v.shape == (2, 32) and 0.3 * scale < v.std() < 3 * scale


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(placeholder_strings=["*"], initializer_words=[""]), "initializer word '' for placeholder '\\*'"),
        (dict(placeholder_strings=["*"], initializer_words=["   "]), "has no tokens"),
        (dict(placeholder_strings=["*", "*"]), "'\\*' and '\\*' are the same"),
        (dict(placeholder_strings=["*", " * "]), "'\\*' and ' \\* ' are the same"),
        (dict(placeholder_strings=[""]), "placeholder '' is empty"),
        (dict(placeholder_strings=["*"], num_vectors_per_token=0), "num_vectors_per_token=0"),
        (dict(placeholder_strings=["*"], initializer_words=["a", "b"]), "2 initializer_words for 1"),
        (dict(placeholder_strings=[["*"]]), r"placeholder_strings\[0\] is list"),
    ],
)
def test_bad_configuration_is_one_line_config_error(embedder, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern) as exc:
        EmbeddingManager(embedder, **kwargs)
    assert "\n" not in str(exc.value)


def test_progressive_words_activate_vectors_by_step(embedder, tmp_path):
    m = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=3, progressive_words=True)
    counts = {}
    for step in (0, 1999, 2000, 4000, 10**6):
        m.set_step(step)
        counts[step] = len(splice(m, ["a photo of *"])[1][0])
    assert counts == {0: 1, 1999: 1, 2000: 2, 4000: 3, 10**6: 3}
    m.set_step(2500)
    assert m.to_embeddings()[0].num_vectors == 2  # the file holds what the prompts saw
    fresh = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=3, progressive_words=True)
    assert len(splice(fresh, ["*"])[1][0]) == 3  # never stepped (inference): all vectors


def test_regularization_loss(embedder):
    off = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=2)
    assert off.regularization_loss().item() == 0.0
    m = EmbeddingManager(embedder, ["*"], ["sculpture"], num_vectors_per_token=2, embedding_reg_weight=0.5)
    assert m.regularization_loss().item() == 0.0
    with torch.no_grad():
        m.vectors("*").add_(0.1)
    near = m.regularization_loss()
    assert near.item() == pytest.approx(0.5 * 32 * 0.01, rel=1e-5)
    with torch.no_grad():
        m.vectors("*").add_(0.1)
    assert m.regularization_loss().item() > near.item()
    m.regularization_loss().backward()
    assert m.vectors("*").grad.abs().sum() > 0


@pytest.mark.parametrize("filename", ["embeddings.pt", "e.safetensors", "learned_embeds.bin", "e.png"])
def test_save_then_load_restores_vectors_exactly(embedder, tmp_path, filename):
    a = EmbeddingManager(embedder, ["<my-cat>"], ["cat"], num_vectors_per_token=3)
    with torch.no_grad():
        a.vectors("<my-cat>").normal_()
    path = a.save(tmp_path / filename, step=42, checkpoint="tiny.ckpt")
    b = EmbeddingManager(embedder, ["<my-cat>"], ["dog"], num_vectors_per_token=3)
    param = b.vectors("<my-cat>")
    b.load(path)
    assert torch.equal(b.vectors("<my-cat>").detach(), a.vectors("<my-cat>").detach())
    assert b.vectors("<my-cat>") is param  # loaded in place: an optimizer holding it stays valid
    if filename.endswith(".pt"):
        (term,) = read_embedding_file(path)
        assert (term.step, term.checkpoint, term.name) == (42, "tiny.ckpt", "<my-cat>")


def test_load_maps_terms_by_token_then_in_order(embedder, tmp_path):
    m = EmbeddingManager(embedder, ["*", "<b>"], ["dog", "cat"], num_vectors_per_token=1)
    vb, vz = torch.randn(1, 32), torch.randn(2, 32)
    write_embedding_file(tmp_path / "two.bin", [LoadedEmbedding("zzz", vz), LoadedEmbedding("<b>", vb)])
    m.load(tmp_path / "two.bin")
    assert torch.equal(m.vectors("<b>").detach(), vb)
    assert torch.equal(m.vectors("*").detach(), vz)  # by order; it adopts the file's 2 vectors
    assert m.initial_vectors("*").shape == (2, 32)
    with pytest.raises(EmbeddingFileError, match="3 terms but the manager has 2"):
        m.load([tmp_path / "two.bin", LoadedEmbedding("x", torch.randn(1, 32))])


def test_width_mismatch_is_one_line_error_naming_the_file(embedder, tmp_path):
    path = write_embedding_file(tmp_path / "sd2.pt", LoadedEmbedding("sd2", torch.randn(2, 1024)))
    m = EmbeddingManager(embedder, ["*"], ["dog"])
    with pytest.raises(EmbeddingFileError, match="1024 wide.*SD 2.x.*takes 32") as exc:
        m.load(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_per_image_tokens(embedder):
    from ldm.data.templates import PER_IMAGE_TOKENS

    m = EmbeddingManager(embedder, ["*"], ["dog"], per_image_tokens=True)
    assert m.placeholders == ["*"] + PER_IMAGE_TOKENS
    _, where = splice(m, [f"a photo of * with {PER_IMAGE_TOKENS[2]}"])
    assert [p for p, _ in where[0]] == ["*", PER_IMAGE_TOKENS[2]]
    assert len(m.to_embeddings()) == 1 and len(m.to_embeddings(include_per_image=True)) == 1 + len(PER_IMAGE_TOKENS)
    listed = EmbeddingManager(embedder, ["*"], ["dog"], per_image_tokens=["<i0>", "<i1>"])
    assert listed.placeholders == ["*", "<i0>", "<i1>"]
