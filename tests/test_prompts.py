"""Prompt syntax and the Conditioner on the tiny CLIP (real vocabulary, hidden 32): chunking past 75 tokens,
BREAK, embeddings kept whole and placed at the right positions, A1111 emphasis, negative brackets."""

from __future__ import annotations

import pytest
import torch

from ldm.embeddings import LoadedEmbedding
from ldm.embeddings.library import EmbeddingLibrary
from ldm.errors import ConfigError
from ldm.prompts import BREAK, Conditioner, Fragment, parse_prompt, split_negative

BOS, EOS = 49406, 49407
WORDS = ["red", "blue", "green", "cat", "dog"]  # one CLIP token each


def words(n: int, offset: int = 0) -> list[str]:
    return [WORDS[(i + offset) % len(WORDS)] for i in range(n)]


def vectors(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))


def make_library(mycat: torch.Tensor = None, toy: torch.Tensor = None) -> EmbeddingLibrary:
    lib = EmbeddingLibrary(32)
    lib.add(LoadedEmbedding("mycat", vectors(2, 1) if mycat is None else mycat, token="*"))
    lib.add(LoadedEmbedding("<cat-toy>", vectors(3, 2) if toy is None else toy, token="<cat-toy>"))
    return lib


@pytest.fixture(scope="module")
def model(tiny_model):
    _ = tiny_model.cond_stage_model.tokenizer  # load the vocabulary once
    return tiny_model


@pytest.fixture
def captured(model, monkeypatch):
    """The inputs_embeds of every encode_embeddings call (the shared model is restored afterwards)."""
    calls = []
    embedder = model.cond_stage_model
    real = embedder.encode_embeddings
    monkeypatch.setattr(embedder, "encode_embeddings", lambda e: calls.append(e.detach().clone()) or real(e))
    return calls


def ids(model, text: str) -> list[int]:
    return model.cond_stage_model.tokenizer(text, add_special_tokens=False)["input_ids"]


def ctx(conditioner: Conditioner, prompts) -> torch.Tensor:
    """The context the conditioner gives (what the samplers take)."""
    return conditioner(prompts)["crossattn"]


def plain(model, text) -> torch.Tensor:
    with torch.no_grad():
        return model.cond_stage_model.encode(text)


# -- syntax ------------------------------------------------------------------------------------------------
def test_emphasis_syntax_follows_a1111():
    assert parse_prompt("a (red) car") == [Fragment("a "), Fragment("red", 1.1), Fragment(" car")]
    assert parse_prompt("((red))")[0].weight == pytest.approx(1.21)
    assert parse_prompt("[red]")[0].weight == pytest.approx(1 / 1.1)
    assert parse_prompt("(red:1.3) car") == [Fragment("red", 1.3), Fragment(" car")]
    assert parse_prompt("((a:2) b)") == [Fragment("a", pytest.approx(2.2)), Fragment(" b", 1.1)]
    assert parse_prompt(r"\(x\) \[y\] time: 5:30") == [Fragment("(x) [y] time: 5:30")]
    assert parse_prompt("x) (open") == [Fragment("x) "), Fragment("open", 1.1)]  # stray / unclosed
    assert parse_prompt("a BREAK b") == [Fragment("a"), BREAK, Fragment("b")]
    assert parse_prompt("a break b Big BREAKfast") == [Fragment("a break b Big BREAKfast")]
    assert parse_prompt("a [b] c", negative_brackets=True) == [Fragment("a [b] c")]


def test_split_negative_takes_square_brackets_out():
    assert split_negative("a cat [ugly, blurry] on grass [bad hands]") == ("a cat on grass", "ugly, blurry, bad hands")
    assert split_negative("a (red:1.2) car [dog], x") == ("a (red:1.2) car, x", "dog")
    assert split_negative(r"a \[x\] [[deep] er] [open") == (r"a \[x\] [open", "deep er")
    assert split_negative("no negatives") == ("no negatives", "")


# -- encoding ------------------------------------------------------------------------------------------------
def test_short_plain_prompts_equal_the_plain_encoder_exactly(model):
    enc = Conditioner(model, make_library())
    with torch.no_grad():
        for prompt in ["a photo of a cat on the beach", "", ["a red car", "two dogs, (plain:1.0) text"]]:
            expected = plain(
                model, [p.replace("(plain:1.0)", "plain") for p in prompt] if isinstance(prompt, list) else prompt
            )
            assert torch.equal(ctx(enc, prompt), expected)
        assert ctx(enc, "").shape == (1, 77, 32)


def test_long_prompt_gets_two_chunks_and_each_half_is_independent(model):
    enc = Conditioner(model)
    tokens = words(120)
    changed = list(tokens)
    changed[100] = "house"
    with torch.no_grad():
        a, b = ctx(enc, " ".join(tokens)), ctx(enc, " ".join(changed))
    assert a.shape == (1, 154, 32)
    assert torch.equal(a[:, :77], b[:, :77]) and not torch.allclose(a[:, 77:], b[:, 77:])
    assert torch.equal(a[:, :77], plain(model, " ".join(tokens[:75])))
    assert torch.equal(a[:, 77:], plain(model, " ".join(tokens[75:])))
    report = enc.tokenization_report(" ".join(tokens))
    assert len(report) == 3 and report[0].startswith("chunk 0 (75/75): red blue")
    assert report[-1] == "120 positions in 2 chunk(s) of 75; nothing truncated"


def test_break_forces_a_new_chunk(model):
    enc = Conditioner(model)
    with torch.no_grad():
        z = ctx(enc, "a red car BREAK a blue sky")
    assert z.shape == (1, 154, 32)
    assert torch.equal(z[:, :77], plain(model, "a red car")) and torch.equal(z[:, 77:], plain(model, "a blue sky"))
    assert ctx(enc, "BREAK a red car BREAK BREAK").shape == (1, 77, 32)  # no empty chunks


def test_comma_near_the_limit_ends_the_chunk(model):
    enc = Conditioner(model)
    prompt = " ".join(words(70)) + ", " + " ".join(words(10))
    assert [len(c.pieces) for c in enc.chunks(prompt)] == [71, 10]
    assert [len(c.pieces) for c in Conditioner(model, comma_backtrack=0).chunks(prompt)] == [75, 6]


def test_embedding_at_the_limit_moves_whole_to_the_next_chunk(model, captured):
    lib = make_library(toy=vectors(3, 5))
    enc = Conditioner(model, lib)
    prompt = " ".join(words(73)) + " <cat-toy> dog"  # 73 + 3 > 75: the toy starts chunk 1
    with torch.no_grad():
        z = ctx(enc, prompt)
    assert z.shape == (1, 154, 32)
    (embeds,) = captured
    table = model.cond_stage_model.text_model.embeddings.token_embedding.weight
    assert torch.equal(embeds[0, 74:], table[[EOS] * 3])  # chunk 0: 73 words, then padding
    assert torch.equal(embeds[1, 1:4], lib.get("<cat-toy>").vectors)
    assert torch.equal(embeds[1, 4], table[ids(model, "dog")[0]])
    assert enc.tokenization_report(prompt)[1] == "chunk 1 (4/75): <cat-toy:0> <cat-toy:1> <cat-toy:2> dog"


def test_two_embeddings_land_at_their_positions_and_each_matters(model, captured):
    lib = make_library()
    enc = Conditioner(model, lib)
    prompt = "a photo of mycat with <cat-toy> on grass"
    with torch.no_grad():
        z = ctx(enc, prompt)
    row = [BOS] + ids(model, "a photo of") + [EOS] * 2 + ids(model, "with") + [EOS] * 3 + ids(model, "on grass")
    row += [EOS] * (77 - len(row))
    table = model.cond_stage_model.text_model.embeddings.token_embedding.weight
    expected = table[row].clone()
    expected[4:6] = lib.get("mycat").vectors
    expected[7:10] = lib.get("<cat-toy>").vectors
    assert torch.equal(captured[0][0], expected)
    assert enc.used_embeddings(prompt) == ["mycat", "<cat-toy>"]
    assert enc.tokenization_report(prompt)[0] == (
        "chunk 0 (11/75): a photo of <mycat:0> <mycat:1> with <cat-toy:0> <cat-toy:1> <cat-toy:2> on grass"
    )
    with torch.no_grad():
        other_cat = ctx(Conditioner(model, make_library(mycat=vectors(2, 9))), prompt)
        other_toy = ctx(Conditioner(model, make_library(toy=vectors(3, 9))), prompt)
    assert not torch.allclose(z[:, 4:], other_cat[:, 4:]) and torch.equal(z[:, :4], other_cat[:, :4])
    assert not torch.allclose(z[:, 7:], other_toy[:, 7:]) and torch.equal(z[:, :7], other_toy[:, :7])


def test_star_and_glued_punctuation_find_the_term(model):
    enc = Conditioner(model, make_library())
    assert enc.used_embeddings("a photo of *.") == ["mycat"]
    assert enc.used_embeddings("mycats and <cat-toy>, MyCat") == ["<cat-toy>", "mycat"]
    with torch.no_grad():
        assert torch.equal(ctx(enc, "a photo of *"), ctx(enc, "a photo of mycat"))


def test_emphasis_changes_the_conditioning_but_keeps_the_chunk_mean(model):
    enc = Conditioner(model)
    with torch.no_grad():
        base = ctx(enc, "a red car on a road")
        weighted = ctx(enc, "a (red:1.5) car on a road")
        down = ctx(enc, "a [red] car on a road")
    for z in (weighted, down):
        assert not torch.allclose(z, base)
        assert z.mean().item() == pytest.approx(base.mean().item(), rel=1e-4)
    # Positions before the weighted word change only by the mean rescale, so their ratio is one constant.
    ratio = weighted[0, :2] / base[0, :2]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4)


def test_batches_with_different_chunk_counts_are_padded_with_empty_chunks(model):
    enc = Conditioner(model)
    long = " ".join(words(100))
    with torch.no_grad():
        z = ctx(enc, ["a red car", long])
    assert z.shape == (2, 154, 32)
    assert torch.equal(z[0, :77], plain(model, "a red car")[0])
    assert torch.equal(z[0, 77:], plain(model, "")[0])
    assert torch.allclose(z[1], ctx(enc, long)[0], atol=1e-6)


def test_bad_settings_are_refused(model):
    with pytest.raises(ConfigError):
        Conditioner(model, EmbeddingLibrary(768))
    with pytest.raises(ConfigError):
        Conditioner(model, chunk_length=76)
    lib = EmbeddingLibrary(32)
    lib.add(LoadedEmbedding("<huge>", torch.zeros(80, 32), token="<huge>"))
    with pytest.raises(ConfigError) as exc:
        ctx(Conditioner(model, lib), "a <huge> thing")
    assert "'<huge>'" in str(exc.value) and "\n" not in str(exc.value)


def test_repeated_prompts_are_encoded_once_until_the_library_changes(model, captured):
    lib = make_library()
    enc = Conditioner(model, lib)
    with torch.no_grad():
        first = ctx(enc, ["a photo of mycat", ""])
        again = ctx(enc, ["a photo of mycat", ""])
        assert again is first and len(captured) == 1  # the text transformer ran once
        lib.add(LoadedEmbedding("mycat", vectors(2, 7), token="*"), name="mycat")  # replaces the term
        changed = ctx(enc, ["a photo of mycat", ""])
    assert len(captured) == 2 and not torch.allclose(changed[0], first[0]) and torch.equal(changed[1], first[1])
    with torch.enable_grad():
        ctx(enc, "a photo of mycat")
        ctx(enc, "a photo of mycat")
    assert len(captured) == 3  # frozen weights: nothing needs a graph, so grad mode caches too
