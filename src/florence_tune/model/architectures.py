"""Florence-2 base and large as randomly initialised models built from their known configurations — for
benchmarks that need the real shapes and FLOPs but no download.

    florence-tune bench --model base --batch-size 32 --bf16
    florence-tune bench --model large --batch-size 16 --bf16

The values are those of the published checkpoints (florence-community/Florence-2-base and -large):
a DaViT vision tower (stages of depth 1, 1, 9, 1; 7x7/4 then 3x3/2 patch embeddings; windows of 12;
768x768 pages give 24x24 = 576 patch tokens + 1 pooled token = 577 image tokens) and a BART
encoder-decoder (base: 6 + 6 layers, d_model 768; large: 12 + 12 layers, d_model 1024) over a
51,289-token vocabulary. The tokenizer is the embedded tiny one (its ids all fall inside that
vocabulary), which is all a throughput measurement needs.
"""

from __future__ import annotations

from florence_tune.model import tiny

ARCHITECTURES = {
    "base": {
        "vision": {"embed_dim": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32], "num_groups": [4, 8, 16, 32],
                   "projection_dim": 768},
        "text": {"d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 12,
                 "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072},
    },
    "large": {
        "vision": {"embed_dim": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64], "num_groups": [8, 16, 32, 64],
                   "projection_dim": 1024},
        "text": {"d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
                 "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096},
    },
}
SHARED_VISION = {"depths": [1, 1, 9, 1], "patch_size": [7, 3, 3, 3], "patch_stride": [4, 2, 2, 2],
                 "patch_padding": [3, 1, 1, 1], "patch_prenorm": [False, True, True, True], "window_size": 12,
                 "mlp_ratio": 4.0, "drop_path_rate": 0.1, "max_position_embeddings": 50,
                 "max_temporal_embeddings": 100}
VOCAB_SIZE = 51289
IMAGE_SIZE = 768
ENCODER_POSITIONS = 1024


def image_tokens(image_size: int) -> int:
    """Patch tokens (the tower downsamples by 32) plus the one pooled token."""
    return (image_size // 32) ** 2 + 1


def config(name: str, tokenizer):
    """``Florence2Config`` of ``name`` ('base' or 'large'), special ids taken from ``tokenizer``."""
    from transformers import BartConfig, Florence2Config

    spec = ARCHITECTURES[name]
    text = BartConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=ENCODER_POSITIONS, dropout=0.1,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                      forced_eos_token_id=tokenizer.eos_token_id, **spec["text"])
    return Florence2Config(text_config=text.to_dict(), vision_config={**SHARED_VISION, **spec["vision"]},
                           image_token_id=tokenizer.image_token_id)


def build(name: str, image_size: int = 0, *, device: str | None = None):
    """(model, processor) for 'tiny', 'base' or 'large' (random weights for the last two).

    ``image_size`` (0: the model's own) changes the processor's page size and the image-token count;
    ``device='meta'`` builds shapes only (for counting FLOPs without memory).
    """
    import torch
    from transformers import Florence2ForConditionalGeneration


    if name == "tiny":
        model, processor = tiny.build_tiny()
        config_ = model.config
    else:
        tokenizer = tiny.build_tokenizer()
        processor = tiny.build_processor(tokenizer)
        config_ = config(name, tokenizer)
        model = None
    size = image_size or (tiny.IMAGE_SIZE if name == "tiny" else IMAGE_SIZE)
    resize_processor(processor, size)
    if model is None or device == "meta":
        with torch.device(device or "cpu"):
            model = Florence2ForConditionalGeneration(config_)
    return model.eval(), processor


def resize_processor(processor, image_size: int) -> None:
    """Make ``processor`` resize pages to ``image_size`` square and emit the matching image-token count."""
    processor.image_processor.size = {"height": image_size, "width": image_size}
    processor.image_processor.image_seq_length = image_tokens(image_size)
    processor.num_image_tokens = image_tokens(image_size)
