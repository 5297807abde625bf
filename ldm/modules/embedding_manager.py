"""EmbeddingManager: the learned vectors of placeholder words, their init, regulariser and files.

Placeholders are any strings ("*", "<my-cat>", "ajaj") with distinct token sequences. The manager does not
encode prompts: `terms()` hands its placeholders to the conditioner (ldm/prompts/conditioner.py) as terms
like any loaded file's, whose vectors are the trainable parameters (with progressive_words, the active
rows); the conditioner puts them in the token embeddings and runs the text encoder on them through its
`encode_embeddings` - the encoder itself is never patched.

SDXL: the embedder is the GeneralConditioner and its `text_encoders` (CLIP-L, bigG) each contribute their
columns: one parameter [n, 768 + 1280] per placeholder, initialised from the init word's rows in EACH
encoder's own token embedding (concatenated in context order), saved as clip_l/clip_g files
(ldm/embeddings/sdxl.py). For SD 1.x/2.x the embedder is the one text encoder.

State: `learned.<i>` (the trainable vectors of placeholder i, float32 whatever the text encoder's dtype)
and `initial_<i>` (their starting values, the anchor of the regulariser). The embedder is referenced, not
owned, so the manager's state_dict holds only these tensors. A placeholder absent from a batch keeps
grad None, so AdamW leaves it alone (DDP therefore needs find_unused_parameters=True).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldm.embeddings import PAPER, SDXL, EmbeddingFileError, LoadedEmbedding, read_embedding_file, write_embedding_file
from ldm.embeddings.families import check_width
from ldm.embeddings.loaded import check_finite
from ldm.errors import ConfigError
from ldm.modules.learned_terms import LearnedTerm, tokenize_placeholders
from ldm.modules.per_image_tokens import PER_IMAGE_TOKENS

log = logging.getLogger(__name__)

PROGRESSIVE_STEPS = 2000  # progressive_words: one more active vector every this many steps (paper value)

PathLike = str | Path
Source = PathLike | LoadedEmbedding


def _strings(value: Any, key: str) -> list[str]:
    """A config value that should be a string or a list of strings (OmegaConf lists included)."""
    items = [] if value is None else [value] if isinstance(value, str) else list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{key}[{i}] is {type(item).__name__} {item!r}, not a string; write e.g. {key}: ['*']")
    return items


def per_image_token_list(per_image_tokens: Any) -> list[str]:
    """per_image_tokens: False/None -> none; True -> the dataset's list; a list of strings -> those."""
    if not per_image_tokens:
        return []
    if per_image_tokens is True:
        return list(PER_IMAGE_TOKENS)  # the dataset's list (ldm.data.templates imports it from ldm.modules)
    return _strings(per_image_tokens, "per_image_tokens")


class EmbeddingManager(nn.Module):
    def __init__(
        self,
        embedder: nn.Module,
        placeholder_strings: Sequence[str] = ("*",),
        initializer_words: Sequence[str] | None = None,
        per_image_tokens: Any = False,
        num_vectors_per_token: int = 1,
        progressive_words: bool = False,
        embedding_reg_weight: float = 0.0,
        **ignored: Any,
    ):
        super().__init__()
        object.__setattr__(self, "embedder", embedder)  # a plain reference: no submodule, no state
        if ignored:
            log.warning("EmbeddingManager ignores unknown config keys: %s", ", ".join(sorted(ignored)))
        n = num_vectors_per_token
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_vectors_per_token={n!r}; use a whole number >= 1 (e.g. 1 to 8)")
        main = _strings(placeholder_strings, "placeholder_strings")
        if not main:
            raise ConfigError("placeholder_strings is empty; give at least one, e.g. ['*']")
        self.num_main = len(main)
        self.strings = main + per_image_token_list(per_image_tokens)
        self.sequences = tokenize_placeholders(self.tokenizer, self.strings)  # checked: non-empty, distinct
        self.num_vectors_per_token = n
        self.progressive_words = bool(progressive_words)
        self.embedding_reg_weight = float(embedding_reg_weight)
        self._step: int | None = None  # None: every vector active (inference)

        words = _strings(initializer_words, "initializer_words")
        if len(words) > len(main):
            raise ConfigError(
                f"{len(words)} initializer_words for {len(main)} placeholder_strings; "
                "give at most one init text per placeholder"
            )
        self.learned = nn.ParameterList()
        for i, placeholder in enumerate(self.placeholders):
            init = self._initial_vectors(placeholder, words[i] if i < len(words) else None, is_main=i < len(main))
            self.learned.append(nn.Parameter(init.clone(), requires_grad=True))
            self.register_buffer(f"initial_{i}", init.clone())

    # -- the embedder's parts (looked up each time: the embedder may be moved or cast) ------------------
    @property
    def encoders(self) -> list[nn.Module]:
        """The text encoders in context order: SDXL's two (the conditioner's `text_encoders`), else [embedder]."""
        encoders = getattr(self.embedder, "text_encoders", None)
        return list(encoders) if encoders is not None else [self.embedder]

    @property
    def tokenizer(self):
        """The first encoder's tokenizer (SDXL's two share the CLIP vocabulary; only their padding differs)."""
        return self.encoders[0].tokenizer

    @property
    def token_embedding(self) -> nn.Embedding:
        """The first encoder's token embedding (the only one for SD 1.x/2.x)."""
        return self.encoders[0].token_embedding

    @property
    def dim(self) -> int:
        """Width of a learned vector: the encoders' widths summed (768, 1024, SDXL 768 + 1280)."""
        return sum(int(e.token_embedding.weight.shape[1]) for e in self.encoders)

    @property
    def part_widths(self) -> tuple[int, ...] | None:
        """Each encoder's share of a vector for two encoders (SDXL: (768, 1280)); None for one."""
        encoders = self.encoders
        return tuple(int(e.token_embedding.weight.shape[1]) for e in encoders) if len(encoders) > 1 else None

    @property
    def file_suffix(self) -> str:
        """What training snapshots are written as: paper `.pt` for one encoder, clip_l/clip_g `.safetensors`
        for SDXL (what A1111, ComfyUI, InvokeAI and kohya read)."""
        return ".safetensors" if self.part_widths is not None else ".pt"

    def _initial_vectors(self, placeholder: str, text: str | None, is_main: bool) -> torch.Tensor:
        """Init text -> its token embeddings (vector i takes token i * n_tokens // n_vectors) in each encoder,
        concatenated in context order; else random, scaled per encoder."""
        n = self.num_vectors_per_token
        if text is None:
            if is_main:
                log.warning("placeholder %r has no initializer word; starting from small random vectors", placeholder)
            parts = []
            for encoder in self.encoders:
                weight = encoder.token_embedding.weight.detach()
                # Scaled like real token embeddings (the paper's uniform [0, 1) init is ~40x too large).
                parts.append(torch.randn(n, weight.shape[1]).to(weight.device) * weight.float().std())
            return torch.cat(parts, dim=1)
        parts = []
        for k, encoder in enumerate(self.encoders):
            ids = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ConfigError(
                    f"initializer word {text!r} for placeholder {placeholder!r} has no tokens; "
                    "use a word such as 'sculpture', or leave it out for a random start"
                )
            if len(ids) > n and k == 0:
                log.info(
                    "init text %r has %d tokens for %d vector(s) of %r; using every %.3gth token",
                    text,
                    len(ids),
                    n,
                    placeholder,
                    len(ids) / n,
                )
            rows = [ids[i * len(ids) // n] for i in range(n)]
            parts.append(encoder.token_embedding.weight.detach()[rows].float().clone())
        return torch.cat(parts, dim=1)

    # -- introspection ------------------------------------------------------------------------------------
    @property
    def placeholders(self) -> list[str]:
        return list(self.strings)

    def terms(self) -> dict[str, LearnedTerm]:
        """Each placeholder as a prompt term whose vectors are its live (active) parameter rows."""
        return {s: LearnedTerm(self, i) for i, s in enumerate(self.strings)}

    def embedding_parameters(self) -> list[nn.Parameter]:
        return list(self.learned)

    def _index(self, placeholder: str) -> int:
        try:
            return self.strings.index(placeholder)
        except ValueError:
            raise ConfigError(f"no placeholder {placeholder!r}; this manager has {self.placeholders[:5]}") from None

    def vectors(self, placeholder: str) -> torch.Tensor:
        """The live parameter [n, dim] of `placeholder` (all vectors, active or not)."""
        return self.learned[self._index(placeholder)]

    def initial_vectors(self, placeholder: str) -> torch.Tensor:
        return getattr(self, f"initial_{self._index(placeholder)}")

    def set_step(self, step: int) -> None:
        """progressive_words: the active vector count is a pure function of the global step (resume-safe)."""
        self._step = int(step)

    def num_active(self, index: int) -> int:
        n = int(self.learned[index].shape[0])
        if not self.progressive_words or self._step is None:
            return n
        return min(n, 1 + self._step // PROGRESSIVE_STEPS)

    # -- regulariser ------------------------------------------------------------------------------------------
    def regularization_loss(self) -> torch.Tensor:
        """embedding_reg_weight x mean over vectors of the squared L2 distance to their initial values."""
        device = self.learned[0].device
        if self.embedding_reg_weight == 0:
            return torch.zeros((), device=device)
        diffs = [p - getattr(self, f"initial_{i}").to(p.device) for i, p in enumerate(self.learned)]
        return self.embedding_reg_weight * torch.cat(diffs).pow(2).sum(-1).mean()

    # -- files --------------------------------------------------------------------------------------------
    def to_embeddings(
        self,
        step: int | None = None,
        checkpoint: str | None = None,
        name: str | None = None,
        include_per_image: bool = False,
    ) -> list[LoadedEmbedding]:
        """The learned terms (active vectors only, i.e. what the prompts saw). `name` names a single
        placeholder's term (default: the placeholder string); per-image tokens only on request."""
        count = len(self.learned) if include_per_image else self.num_main
        if name is not None and count != 1:
            raise ConfigError(f"name={name!r} needs a single placeholder; this manager has {count}")
        terms = []
        for i in range(count):
            placeholder = self.strings[i]
            vectors = self.learned[i][: self.num_active(i)].detach().to("cpu", torch.float32).clone()
            terms.append(
                LoadedEmbedding(
                    name=name or placeholder,
                    vectors=vectors,
                    token=placeholder,
                    step=step,
                    checkpoint=checkpoint,
                    source=None,
                    format=PAPER if self.part_widths is None else SDXL,
                    part_widths=self.part_widths,
                )
            )
        return terms

    def save(
        self,
        path: PathLike,
        step: int | None = None,
        checkpoint: str | None = None,
        name: str | None = None,
        format: str | None = None,
    ) -> Path:
        """Write the learned terms atomically (paper .pt unless the suffix or `format` says otherwise; SDXL
        terms as clip_l/clip_g, see ldm/embeddings/sdxl_files.py)."""
        token_ids = {s: seq[0] for s, seq in zip(self.strings, self.sequences)}
        return write_embedding_file(
            path, self.to_embeddings(step, checkpoint, name), format=format, token_ids=token_ids
        )

    @torch.no_grad()
    def load(self, source: Source | Sequence[Source]) -> None:
        """Load terms from files (any format) or LoadedEmbedding objects: a term goes to the placeholder its
        token or name equals, the others to the remaining placeholders in order."""
        items = [source] if isinstance(source, (str, Path, LoadedEmbedding)) else list(source)
        terms: list[LoadedEmbedding] = []
        for item in items:
            terms += [item] if isinstance(item, LoadedEmbedding) else read_embedding_file(item)
        for t in terms:
            check_finite(t.vectors, str(t.source or t.name), t.token or t.name)  # files were checked on read
            check_width([t], self.dim, str(t.source or t.name), self.part_widths)
        index = {s: i for i, s in enumerate(self.strings)}
        chosen: dict[int, LoadedEmbedding] = {}
        rest = []
        for t in terms:
            i = index[t.token] if t.token in index else index.get(t.name)
            if i is not None and i not in chosen:
                chosen[i] = t
            else:
                rest.append(t)
        free = [i for i in range(len(self.learned)) if i not in chosen]
        if len(rest) > len(free):
            where = ", ".join(sorted({str(t.source or t.name) for t in terms}))
            raise EmbeddingFileError(
                f"{where}: {len(terms)} terms but the manager has {len(self.learned)} "
                "placeholder(s); add placeholder_strings or load fewer terms"
            )
        chosen.update(zip(free, rest))
        for i, t in sorted(chosen.items()):
            self._assign(i, t)

    def _assign(self, i: int, term: LoadedEmbedding) -> None:
        param = self.learned[i]
        vectors = term.vectors.to(device=param.device, dtype=torch.float32)
        if vectors.shape == param.shape:
            param.copy_(vectors)  # in place: an optimizer already holding the parameter keeps working
        else:
            # The file defines the term: adopt its vector count; the regulariser anchors at the loaded values.
            log.info(
                "placeholder %r now has %d vectors (was %d), as in %s",
                self.strings[i],
                vectors.shape[0],
                param.shape[0],
                term.source or term.name,
            )
            self.learned[i] = nn.Parameter(vectors.clone(), requires_grad=True)
            self.register_buffer(f"initial_{i}", vectors.clone())
        log.info(
            "loaded %r (%d vectors) from %s into placeholder %r",
            term.name,
            vectors.shape[0],
            term.source or "memory",
            self.strings[i],
        )
