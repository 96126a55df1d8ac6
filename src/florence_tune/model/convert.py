"""Turn a checkpoint in Microsoft's original Florence-2 layout into a native one, running none of its code.

Run it: ``florence-tune convert ./Florence-2-base-ft ./Florence-2-base-ft-native``, then
``florence-tune train --model ./Florence-2-base-ft-native ...``.

The original layout (the microsoft/Florence-2-* repositories, and checkpoints fine-tuned from them
with ``trust_remote_code``) has a ``config.json`` with ``auto_map``, a ``davit`` vision config and a
``florence2_language`` text config, weights in ``pytorch_model.bin`` or safetensors, and a processor
that adds Florence-2's location and task tokens at run time. Converting means:

* the config fields are mapped onto ``Florence2Config`` (vision ``dim_embed`` → ``embed_dim``, the
  position-embedding sizes out of their sub-dictionaries, the text config onto ``BartConfig``), and its
  decoding defaults (beam search over 3, no repeated 3-grams) onto the generation config;
* the weights are read with safetensors or ``torch.load(weights_only=True)`` only, renamed to the
  native names (``RENAMES``), the image projection transposed; DaViT's classifier head and final
  norm, which Florence-2 never uses, are dropped;
* the tokenizer is the BART tokenizer of the checkpoint plus any of Florence-2's 1,024 added tokens
  it lacks, in their original order, plus ``<image>``; the embedding matrix grows to match, padded to a
  multiple of 64 rows as the official conversion pads it (new rows start at the mean of the old ones);
  the image processor becomes a ``CLIPImageProcessor``, and the processor parses generated text with
  Florence-2's own settings (``tiny.POST_PROCESSOR_CONFIG``).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from florence_tune.errors import UsageError
from florence_tune.model.tiny import FLORENCE_MARKER_TOKENS, IMAGE_TOKEN, POST_PROCESSOR_CONFIG

# (original name pattern, native replacement), tried in order; the first match wins.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_tower\.convs\.(\d+)\.proj\.", r"model.vision_tower.convs.\1.conv."),
    (r"^vision_tower\.convs\.(\d+)\.norm\.", r"model.vision_tower.convs.\1.norm."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.conv([12])\.fn\.dw\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.conv\4."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.spatial_block\.window_attn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.spatial_block.norm1."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.channel_block\.channel_attn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.channel_block.norm1."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block\.window|channel_block\.channel)_attn\.fn\.",
     r"model.vision_tower.blocks.\1.\2.\3_attn."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.ffn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.norm2."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.ffn\.fn\.net\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.ffn."),
    (r"^image_projection$", r"model.multi_modal_projector.image_projection.weight"),
    (r"^image_proj_norm\.", r"model.multi_modal_projector.image_proj_norm."),
    (r"^image_pos_embed\.", r"model.multi_modal_projector.image_position_embed."),
    (r"^visual_temporal_embed\.", r"model.multi_modal_projector.visual_temporal_embed."),
    (r"^language_model\.model\.", r"model.language_model."),
    (r"^language_model\.lm_head\.", r"lm_head."),
)
# Present in the original checkpoints, unused by Florence-2 (DaViT's ImageNet classifier and its norm).
UNUSED = re.compile(r"^vision_tower\.(head|norms)\.")
# Native weights that are tied to the shared embedding, so a checkpoint may omit them.
TIED = ("model.language_model.encoder.embed_tokens.weight", "model.language_model.decoder.embed_tokens.weight",
        "lm_head.weight")
# The official conversion pads the embedding (and the tied lm_head) to a multiple of 64 rows once <image> is
# added (convert_florence2_original_pytorch_to_hf.py, huggingface/transformers): base 51,290 tokens, 51,328 rows.
EMBEDDING_ROWS_MULTIPLE = 64
# Original vision settings whose other values the native model does not implement.
SUPPORTED_VISION = {
    ("visual_temporal_embedding", "type"): "COSINE",
    ("image_pos_embed", "type"): "learned_abs_2d",
    ("image_feature_source",): ["spatial_avg_pool", "temporal_avg_pool"],
}
_VISION_SAME_NAME = ("depths", "num_heads", "num_groups", "window_size", "projection_dim", "patch_size",
                     "patch_stride", "patch_padding", "patch_prenorm", "drop_path_rate")
# Decoding defaults that Microsoft's text configs carry (microsoft/Florence-2-base config.json) and the official
# conversion moves into generation_config.json (GenerationConfig.from_model_config). Not the output_* flags
# those configs also set (they change what generate returns), nor a fine-tune's saved global defaults.
GENERATION_SETTINGS = ("num_beams", "no_repeat_ngram_size", "early_stopping", "forced_bos_token_id",
                       "forced_eos_token_id")
# BART fields that are generation preferences, not architecture; our generation sets them explicitly.
_TEXT_DROPPED = {"_name_or_path", "architectures", "model_type", "transformers_version", "output_attentions",
                 "output_hidden_states", "return_dict", "id2label", "label2id", "dtype", "torch_dtype"}


# --- config -------------------------------------------------------------------------------------


def read_original_config(source: Path) -> dict[str, Any]:
    try:
        original = json.loads((source / "config.json").read_text())
    except ValueError as exc:
        raise UsageError(f"'{source / 'config.json'}' is not valid JSON ({exc})") from None
    vision = original.get("vision_config") or {}
    if "auto_map" not in original or vision.get("model_type") != "davit" or "dim_embed" not in vision:
        raise UsageError(f"'{source}' is not in the original Florence-2 layout (auto_map, davit vision config); "
                         "a native checkpoint loads as it is with --model")
    return original


def vision_config(original: dict[str, Any]) -> dict[str, Any]:
    """Original DaViT settings → native ``Florence2VisionConfig`` fields."""
    vision = original["vision_config"]
    for path, expected in SUPPORTED_VISION.items():
        value = vision
        for key in path:
            value = value.get(key, expected) if isinstance(value, dict) else value
        if value != expected:
            raise UsageError(f"vision_config.{'.'.join(path)} = {value!r} is not supported by the native "
                             f"Florence-2 model (only {expected!r})")
    mapped = {name: vision[name] for name in _VISION_SAME_NAME if name in vision}
    mapped["embed_dim"] = vision["dim_embed"]
    mapped["max_temporal_embeddings"] = (vision.get("visual_temporal_embedding") or {}).get(
        "max_temporal_embeddings", 100)
    mapped["max_position_embeddings"] = (vision.get("image_pos_embed") or {}).get("max_pos_embeddings", 50)
    return mapped


def text_config(original: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Original language settings → ``BartConfig`` fields; sizes are read off the weights themselves."""
    from transformers import BartConfig

    known = set(BartConfig().to_dict()) - _TEXT_DROPPED
    text = {k: v for k, v in (original.get("text_config") or {}).items() if k in known}
    text["vocab_size"] = int(state["model.language_model.shared.weight"].shape[0])
    positions = state.get("model.language_model.encoder.embed_positions.weight")
    if positions is not None:
        text["max_position_embeddings"] = int(positions.shape[0]) - 2  # BART keeps two offset rows
    return text


def generation_settings(original: dict[str, Any]) -> dict[str, Any]:
    """The original text config's decoding defaults (``GENERATION_SETTINGS``) that it sets."""
    text = original.get("text_config") or {}
    return {name: text[name] for name in GENERATION_SETTINGS if text.get(name) is not None}


# --- weights ------------------------------------------------------------------------------------


def load_weights(source: Path) -> dict[str, Any]:
    """Every tensor of the checkpoint, from safetensors or pickled weights (tensors only), sharded or not."""
    for single, index, reader in (
        ("model.safetensors", "model.safetensors.index.json", _read_safetensors),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", _read_pickled),
    ):
        if (source / single).is_file():
            return reader(source / single)
        if (source / index).is_file():
            state: dict[str, Any] = {}
            for shard in _shards(source / index):
                state.update(reader(shard))
            return state
    raise UsageError(f"'{source}' holds no model.safetensors or pytorch_model.bin (nor their sharded index)")


def _shards(index: Path) -> list[Path]:
    listing = _read_json(index)
    weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UsageError(f"'{index}' names no shards (no weight_map); copy the checkpoint's index file again")
    shards = [index.parent / name for name in sorted(set(map(str, weight_map.values())))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise UsageError(f"'{index.parent}' lacks {len(missing)} shard(s) its index names: {_listing(missing)}; "
                         "copy the whole checkpoint folder")
    return shards


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"'{path}' is not a readable safetensors file ({str(exc).strip()[:120]}); download it "
                         "again") from None


def _read_pickled(path: Path) -> dict[str, Any]:
    """Tensors only: torch's weights_only unpickler refuses anything that could run code."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: what matters is whether it loads
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or hostile file fails anywhere in the unpickler; none of its code runs
        raise UsageError(f"'{path}' cannot be read safely as weights (it is truncated, or holds code or objects "
                         "other than tensors); convert from the checkpoint's model.safetensors instead, or download "
                         "it again or re-save it where it was made (torch.save of the state_dict)") from None
    odd = [str(name) for name, value in state.items() if not isinstance(value, torch.Tensor)] if isinstance(
        state, dict) else [type(state).__name__]
    if odd:
        raise UsageError(f"'{path}' is not a plain dict of tensors ({_listing(odd)} is not a tensor); re-save the "
                         "model's state_dict() alone, or convert from the checkpoint's model.safetensors")
    return state


def rename_weights(state: dict[str, Any]) -> dict[str, Any]:
    """Original names → native names; unknown names are one error listing them."""
    renamed, unmatched = {}, []
    for name, tensor in state.items():
        if UNUSED.match(name):
            continue
        if name == "language_model.final_logits_bias":
            if tensor.count_nonzero():
                raise UsageError("language_model.final_logits_bias is not zero; the native model has no such bias")
            continue
        target = _rename(name)
        if target is None:
            unmatched.append(name)
            continue
        renamed[target] = tensor.t().contiguous() if name == "image_projection" else tensor
    if unmatched:
        raise UsageError(f"{len(unmatched)} weight(s) have no native name: {_listing(unmatched)}")
    return renamed


def _rename(name: str) -> str | None:
    for pattern, replacement in RENAMES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def _listing(names: list[str], shown: int = 5) -> str:
    more = f" ... (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- tokenizer, model, processor ----------------------------------------------------------------


def build_tokenizer(source: Path, scratch: Path):
    """The checkpoint's BART tokenizer with Florence-2's added tokens (original order) and ``<image>``."""
    from transformers import AddedToken, BartTokenizer


    tokenizer = BartTokenizer.from_pretrained(str(source))
    vocabulary = tokenizer.get_vocab()
    for token in [*FLORENCE_MARKER_TOKENS, IMAGE_TOKEN]:
        if token not in vocabulary:
            tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    # The processor finds the image token by its role name, which only loading can attach.
    tokenizer.save_pretrained(str(scratch))
    return BartTokenizer.from_pretrained(str(scratch), model_specific_special_tokens={"image_token": IMAGE_TOKEN})


def build_model(original: dict[str, Any], state: dict[str, Any], tokenizer):
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    config = Florence2Config(text_config=text_config(original, state), vision_config=vision_config(original),
                             image_token_id=tokenizer.image_token_id)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.update(**generation_settings(original))
    expected = set(model.state_dict())
    missing = sorted(expected - set(state) - set(TIED))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        problems = ([f"{len(missing)} native weight(s) missing: {_listing(missing)}"] if missing else []) + (
            [f"{len(unexpected)} weight(s) not in the native model: {_listing(unexpected)}"] if unexpected else [])
        raise UsageError("; ".join(problems))
    mismatched = [k for k, v in state.items() if tuple(v.shape) != tuple(model.state_dict()[k].shape)]
    if mismatched:
        raise UsageError(f"{len(mismatched)} weight(s) disagree in shape with the config: {_listing(mismatched)}")
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    _grow_embeddings(model, len(tokenizer))
    if len(dtypes) == 1:
        model.to(dtypes.pop())  # keep the checkpoint's precision (the originals are float16)
    return model.eval()


def _grow_embeddings(model, size: int) -> None:
    """A row for every token, padded to a multiple of ``EMBEDDING_ROWS_MULTIPLE`` as the official conversion
    pads them; rows the checkpoint lacked start at its mean embedding (deterministic, where the official
    script's ``mean_resizing`` draws them at random around that mean)."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(size, pad_to_multiple_of=EMBEDDING_ROWS_MULTIPLE, mean_resizing=False)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[old:] = weight[:old].mean(dim=0, keepdim=True)
    model.tie_weights()


def build_processor(source: Path, tokenizer, config):
    """``Florence2Processor`` with a CLIP image processor sized as the original's, no code of its own."""
    from transformers import CLIPImageProcessorPil, Florence2Processor


    settings = _read_json(source / "preprocessor_config.json")
    size = settings.get("size") or {"height": 768, "width": 768}
    height = size.get("height") or size.get("shortest_edge") or 768
    width = size.get("width") or size.get("shortest_edge") or 768
    stride = 1
    for step in config.vision_config.patch_stride:
        stride *= step
    # One token per cell of the last DaViT stage, plus the pooled (temporal) token.
    seq_length = (height // stride) * (width // stride) + 1
    image_processor = CLIPImageProcessorPil(
        do_resize=True, size={"height": height, "width": width}, do_center_crop=False,
        image_mean=settings.get("image_mean", [0.485, 0.456, 0.406]),
        image_std=settings.get("image_std", [0.229, 0.224, 0.225]),
        resample=settings.get("resample", 3), rescale_factor=settings.get("rescale_factor", 1 / 255),
        image_seq_length=seq_length,
    )
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                              post_processor_config=POST_PROCESSOR_CONFIG)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise UsageError(f"'{path}' is not valid JSON ({exc})") from None
