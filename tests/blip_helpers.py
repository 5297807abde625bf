"""A tiny random BLIP image-captioning folder, built in the test (nothing downloaded): a BERT tokenizer over
a dozen words, a 1-layer vision and text tower, saved with save_pretrained like a real model folder."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a", "photo", "of", "purple", "star", "shape", "the", "on", "white", "background", "small", "bright")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def make_tiny_blip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Write a random BlipForConditionalGeneration + BlipProcessor to `folder`; returns it."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab-source.txt"
    vocab.write_text("\n".join((*SPECIAL, *WORDS)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # BLIP's decoder start token, as in the real vocab
    vocab.unlink()
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=ids("[DEC]"),
        eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A larger vision init than BLIP's default (1e-10) so different images get different features.
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
        initializer_range=0.5,
    )
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16, image_text_hidden_size=16)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # loud cross-attention: the caption depends on the image, not only on the decoder
        for name, param in model.named_parameters():
            if name.startswith("text_decoder.") and "crossattention" in name:
                param.mul_(20.0)
    model.save_pretrained(folder)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
