"""convert: a checkpoint in the original Microsoft layout, built here from the tiny model, becomes a
native one that computes the same logits — without any of the original's Python code running."""

import json
import re
import shutil
from importlib import resources

import pytest
import torch
from transformers import BartTokenizer

from florence_tune.batch.collate import Collator, encoder_positions
from florence_tune.cli import main
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.evaluation.generation import Decoding, generate, generation_config
from florence_tune.model import loading, tiny

# Native name → original name, written independently of convert.RENAMES (the other direction).
TO_ORIGINAL = (
    (r"^model\.vision_tower\.convs\.(\d+)\.conv\.", r"vision_tower.convs.\1.proj."),
    (r"^model\.vision_tower\.convs\.(\d+)\.norm\.", r"vision_tower.convs.\1.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.(\w+)_block\.conv(\d)\.",
     r"vision_tower.blocks.\1.\2_block.conv\3.fn.dw."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.spatial_block\.norm1\.",
     r"vision_tower.blocks.\1.spatial_block.window_attn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.channel_block\.norm1\.",
     r"vision_tower.blocks.\1.channel_block.channel_attn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.(\w+)_block\.(window|channel)_attn\.",
     r"vision_tower.blocks.\1.\2_block.\3_attn.fn."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.(\w+)_block\.norm2\.", r"vision_tower.blocks.\1.\2_block.ffn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+\.\d+)\.(\w+)_block\.ffn\.", r"vision_tower.blocks.\1.\2_block.ffn.fn.net."),
    (r"^model\.multi_modal_projector\.image_projection\.weight$", "image_projection"),
    (r"^model\.multi_modal_projector\.image_proj_norm\.", "image_proj_norm."),
    (r"^model\.multi_modal_projector\.image_position_embed\.", "image_pos_embed."),
    (r"^model\.multi_modal_projector\.visual_temporal_embed\.", "visual_temporal_embed."),
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
)
VOCAB_ROWS = ("model.language_model.shared.weight", "model.language_model.encoder.embed_tokens.weight",
              "model.language_model.decoder.embed_tokens.weight", "lm_head.weight")


# Florence-2's run-time vocabulary as Microsoft's processing_florence2.py adds it (microsoft/Florence-2-base),
# written here independently of the package's table, typo included.
ORIGINAL_ADDED_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", *(f"<loc_{i}>" for i in range(1000)),
                         "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
                         "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
                         "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"]
BART_VOCAB_SIZE = 50265
# Ids in the hub's native checkpoints (transformers' official conversion): BART's 50,265, the 1,024 above, <image>.
OFFICIAL_IDS = {"<od>": 50265, "</ocr>": 50268, "<loc_0>": 50269, "<loc_999>": 51268, "<cap>": 51269,
                "<region_to_desciption>": 51282, "</region_to_desciption>": 51283, "<and>": 51288, "<image>": 51289}


def original_name(name: str) -> str:
    for pattern, replacement in TO_ORIGINAL:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    raise AssertionError(f"no original name for {name}")


def kept_rows(processor) -> list[int]:
    """The original vocabulary: BART's tokens then the 1,024 Florence-2 tokens, without <image>."""
    image = processor.tokenizer.image_token_id
    return [i for i in range(len(processor.tokenizer)) if i != image]


def write_original(model, processor, folder, extra_weights=None, text_config=None):
    """The tiny model as Microsoft's repositories lay it out: remote-code config, renamed pickled weights,
    a BART tokenizer without Florence-2's run-time tokens, and a processor that names its own code.
    ``text_config``: settings added to the original's text config."""
    folder.mkdir()
    keep = torch.tensor(kept_rows(processor))
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.index_select(0, keep) if name in VOCAB_ROWS else tensor
        state[original_name(name)] = tensor.t().contiguous() if name.endswith("image_projection.weight") else tensor
    last_dim = model.config.vision_config.embed_dim[-1]
    state.update({"vision_tower.norms.weight": torch.ones(last_dim), "vision_tower.norms.bias": torch.zeros(last_dim),
                  "vision_tower.head.weight": torch.randn(1000, last_dim), "vision_tower.head.bias": torch.zeros(1000),
                  "language_model.final_logits_bias": torch.zeros(1, len(keep)), **(extra_weights or {})})
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(original_config(model.config, len(keep), **(text_config or {}))))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(resources.files("florence_tune") / "assets" / "tiny_tokenizer" / name, folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024,
                                                              "processor_class": "Florence2Processor"}))
    size = {"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE}
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoProcessor": "processing_florence2.Florence2Processor"}, "crop_size": size,
        "do_center_crop": False, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": tiny.IMAGE_MEAN, "image_std": tiny.IMAGE_STD, "image_processor_type": "CLIPImageProcessor",
        "image_seq_length": tiny.IMAGE_SEQ_LENGTH, "processor_class": "Florence2Processor", "resample": 3,
        "rescale_factor": 1 / 255, "size": size}))
    for code in ("modeling_florence2.py", "configuration_florence2.py", "processing_florence2.py"):
        (folder / code).write_text("raise SystemExit('the repository code ran')\n")
    return folder


def widen_to_bart_vocabulary(folder):
    """Give an original checkpoint written from the tiny model BART's full 50,265-token vocabulary: filler
    tokens after the tiny BPE vocabulary, and zero rows for them in every vocabulary-sized weight."""
    vocab = json.loads((folder / "vocab.json").read_text())
    tiny_size = len(vocab)
    fillers = {f"filler{i}": i for i in range(tiny_size, BART_VOCAB_SIZE)}
    assert not fillers.keys() & vocab.keys()
    (folder / "vocab.json").write_text(json.dumps({**vocab, **fillers}))
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    for name in [original_name(n) for n in VOCAB_ROWS] + ["language_model.final_logits_bias"]:
        bias = name.endswith("bias")  # (1, vocabulary); the others are (vocabulary, width)
        tensor = state[name].t() if bias else state[name]
        gap = tensor.new_zeros(BART_VOCAB_SIZE - tiny_size, tensor.shape[1])
        tensor = torch.cat([tensor[:tiny_size], gap, tensor[tiny_size:]])
        state[name] = tensor.t().contiguous() if bias else tensor
    torch.save(state, folder / "pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = config["text_config"]["vocab_size"] = BART_VOCAB_SIZE + len(ORIGINAL_ADDED_TOKENS)
    (folder / "config.json").write_text(json.dumps(config))


def save_tokenizer_as_remote_code_does(folder):
    """The tokenizer files a fine-tune with the remote code saves: its processor added Florence-2's tokens
    (special, after BART's vocabulary), so they are in the files already."""
    size = len(json.loads((folder / "vocab.json").read_text()))
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["added_tokens_decoder"] = {
        str(size + i): {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, token in enumerate(ORIGINAL_ADDED_TOKENS)}
    settings["additional_special_tokens"] = ORIGINAL_ADDED_TOKENS
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))


def original_config(native, vocab_size: int, **text_settings) -> dict:
    vision = native.vision_config
    text = {k: v for k, v in native.text_config.to_dict().items()
            if k not in ("model_type", "architectures", "transformers_version", "dtype")}
    text.update({"model_type": "florence2_language", "vocab_size": vocab_size, "no_repeat_ngram_size": 3,
                 "num_beams": 3, "normalize_before": False, "add_final_layer_norm": False, **text_settings})
    return {
        "architectures": ["Florence2ForConditionalGeneration"], "model_type": "florence2",
        "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config",
                     "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
        "projection_dim": vision.projection_dim, "vocab_size": vocab_size, "is_encoder_decoder": True,
        "text_config": text,
        "vision_config": {
            "model_type": "davit", "dim_embed": list(vision.embed_dim), "depths": list(vision.depths),
            "num_heads": list(vision.num_heads), "num_groups": list(vision.num_groups),
            "window_size": vision.window_size, "projection_dim": vision.projection_dim,
            "patch_size": list(vision.patch_size), "patch_stride": list(vision.patch_stride),
            "patch_padding": list(vision.patch_padding), "patch_prenorm": list(vision.patch_prenorm),
            "drop_path_rate": vision.drop_path_rate, "enable_checkpoint": False,
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": vision.max_temporal_embeddings},
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": vision.max_position_embeddings},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
    }


@pytest.fixture(scope="module")
def native():
    model, processor = loading.load("tiny")
    torch.manual_seed(3)
    with torch.no_grad():  # away from the initialisation, so every weight has to arrive in its place
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval(), processor


# The decoding settings of Microsoft's text configs that the tiny model lacks (microsoft/Florence-2-base
# config.json), and the flag that must not reach the generation config.
MICROSOFT_TEXT_SETTINGS = {"early_stopping": True, "forced_bos_token_id": 0, "output_attentions": True}


@pytest.fixture(scope="module")
def converted_dir(native, tmp_path_factory):
    """The tiny model written in the original layout with Microsoft's text settings, converted once."""
    model, processor = native
    folder = tmp_path_factory.mktemp("converted")
    source = write_original(model, processor, folder / "original", text_config=MICROSOFT_TEXT_SETTINGS)
    main_convert(source, folder / "native")
    return folder / "native"


def batch_for(model, processor, page_image):
    samples = [Sample("1", page_image, "<OD>", "header<loc_10><loc_20><loc_900><loc_300>"),
               Sample("2", page_image, "<VQA>What is the total?", "$12.50")]
    return Collator(processor, max_positions=encoder_positions(model))(samples).inputs


def test_original_layout_converts_to_identical_logits_and_answers(native, page_image, tmp_path, capsys):
    model, processor = native
    source = write_original(model, processor, tmp_path / "original")
    with pytest.raises(UsageError, match="florence-tune convert"):
        loading.load(str(source))
    assert main(["convert", str(source), str(tmp_path / "native")]) == 0
    assert "converted to" in capsys.readouterr().out
    converted, converted_processor = loading.load(str(tmp_path / "native"))

    tokenizer = converted_processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<od>", "<loc_0>", "<loc_999>", "<and>"]) == [951, 955, 1954, 1974]
    assert tokenizer.image_token_id == 1975 == converted.config.image_token_id
    assert converted_processor.image_processor.image_seq_length == tiny.IMAGE_SEQ_LENGTH
    with torch.no_grad():
        ours = model(**batch_for(model, processor, page_image)).logits
        theirs = converted(**batch_for(converted, converted_processor, page_image)).logits
    # Same vocabulary in another order: each original token's column must match exactly; <image>
    # (absent from the original) is the one new row.
    torch.testing.assert_close(theirs[..., : len(kept_rows(processor))], ours[..., kept_rows(processor)],
                               rtol=0, atol=1e-6)
    config = generation_config(processor, Decoding(num_beams=2, max_new_tokens=12))
    plain = {k: v for k, v in batch_for(model, processor, page_image).items() if k != "labels"}
    plain_converted = {k: v for k, v in batch_for(converted, converted_processor, page_image).items() if k != "labels"}
    assert generate(model, processor, plain, config) == generate(converted, converted_processor, plain_converted,
                                                                 config)


def test_unknown_weights_are_named_in_one_line(native, tmp_path):
    model, processor = native
    extra = {f"vision_tower.adapter.{i}.weight": torch.zeros(1) for i in range(7)}
    source = write_original(model, processor, tmp_path / "original", extra_weights=extra)
    with pytest.raises(UsageError) as error:
        main_convert(source, tmp_path / "native")
    message = str(error.value)
    assert "7 weight(s) have no native name" in message and "vision_tower.adapter.0.weight" in message
    assert "(+2 more)" in message and "\n" not in message


def main_convert(source, destination):
    from florence_tune.commands import convert
    from florence_tune.config import ConvertConfig

    return convert.run(ConvertConfig(source=str(source), destination=str(destination)))


def test_refuses_native_checkpoints_and_full_destinations(tmp_path, capsys):
    native_dir = loading.resolve_model_path("tiny")
    assert main(["convert", native_dir, str(tmp_path / "out")]) == 2
    assert "not in the original Florence-2 layout" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    assert main(["convert", str(tmp_path / "src"), str(full)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (full / "keep.txt").exists()
    assert main(["convert"]) == 2


def test_image_processor_of_768_pixel_models_gives_577_image_tokens(native, tmp_path):
    from transformers import Florence2Config

    from florence_tune.model.convert import build_processor

    _, processor = native
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 768, "width": 768},
                                                                   "image_processor_type": "CLIPImageProcessor"}))
    built = build_processor(tmp_path, processor.tokenizer, Florence2Config())  # DaViT strides 4, 2, 2, 2
    assert built.image_processor.image_seq_length == 577 and built.num_image_tokens == 577
    built.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "processor_config.json").read_text())["image_processor"]
    assert saved["image_processor_type"] == "CLIPImageProcessor" and saved["size"] == {"height": 768, "width": 768}


class RunsCode:
    """Unpickled without weights_only, this would create ``marker``: the stand-in for a hostile pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def damage(folder, how):
    weights = folder / "pytorch_model.bin"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "code":
        torch.save({"w": torch.zeros(1), "x": RunsCode(folder / "ran")}, weights)
    elif how == "plain pickle":
        import pickle

        weights.write_bytes(pickle.dumps(RunsCode(folder / "ran"), protocol=4))
    elif how == "not tensors":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, weights)


@pytest.mark.parametrize("how", ["truncated", "code", "plain pickle", "not tensors"])
def test_pickled_weights_that_cannot_be_read_safely_are_one_line_of_our_own(how, native, tmp_path, capsys):
    model, processor = native
    source = write_original(model, processor, tmp_path / "original")
    damage(source, how)
    assert main(["convert", str(source), str(tmp_path / "native")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"'{source / 'pytorch_model.bin'}'" in err[0] and "safetensors" in err[0], err
    assert "weights_only" not in err[0] and "Traceback" not in err[0], err
    assert not (source / "ran").exists() and not (tmp_path / "native").exists()


def test_damaged_safetensors_and_shard_indexes_are_one_line(native, tmp_path, capsys):
    from safetensors.torch import save_file

    model, processor = native
    source = write_original(model, processor, tmp_path / "original")
    (source / "pytorch_model.bin").unlink()
    cases = {"model.safetensors": None, "model.safetensors.index.json": "{",
             "pytorch_model.bin.index.json": '{"weight_map": {"a": "pytorch_model-00001.bin"}}'}
    for name, text in cases.items():
        if text is None:
            save_file({"w": torch.zeros(8)}, str(source / name))
            (source / name).write_bytes((source / name).read_bytes()[:-4])
        else:
            (source / name).write_text(text)
        assert main(["convert", str(source), str(tmp_path / "native")]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(source) in err[0] and "Traceback" not in err[0], err
        (source / name).unlink()


def test_a_destination_under_a_file_is_refused_before_converting(native, tmp_path, capsys):
    model, processor = native
    source = write_original(model, processor, tmp_path / "original")
    (tmp_path / "file.txt").write_text("x")
    assert main(["convert", str(source), str(tmp_path / "file.txt" / "native")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{tmp_path / 'file.txt'}' is a file" in err[0], err


def test_converted_processor_drops_the_phrases_microsoft_bans_from_grounding(converted_dir):
    """Microsoft's post-processing keeps a grounded phrase unless it is one of 72 pronouns and filler words
    ("image", "a", "he", ...); only "a dog" here is a phrase (transformers' parser gives whole pixels)."""
    _, processor = loading.load(str(converted_dir))
    text = ("<s>image<loc_0><loc_0><loc_999><loc_999>a<loc_1><loc_1><loc_5><loc_5>he<loc_2><loc_2><loc_6><loc_6>"
            "a dog<loc_100><loc_200><loc_300><loc_400></s>")
    parsed = processor.post_process_generation(text=text, task="<CAPTION_TO_PHRASE_GROUNDING>", image_size=(1000, 500))
    assert parsed == {"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [[100, 100, 300, 200]], "labels": ["a dog"]}}
    banned = processor.post_processor.banned_grounding_tokens
    assert len(banned) == 72 and {"I", "themselves", "each other", "a set", "other objects", "the"} <= banned


@pytest.mark.parametrize("tokenizer_from", ["Microsoft's repository", "a remote-code fine-tune"])
def test_florence_tokens_get_the_ids_and_embedding_rows_of_the_hubs_native_checkpoints(tokenizer_from, native,
                                                                                        tmp_path):
    model, processor = native
    source = write_original(model, processor, tmp_path / "original")
    widen_to_bart_vocabulary(source)
    if tokenizer_from == "a remote-code fine-tune":
        save_tokenizer_as_remote_code_does(source)
        assert len(BartTokenizer.from_pretrained(str(source))) == OFFICIAL_IDS["<image>"]
    main_convert(source, tmp_path / "native")
    converted, converted_processor = loading.load(str(tmp_path / "native"))
    tokenizer = converted_processor.tokenizer

    assert {token: tokenizer.convert_tokens_to_ids(token) for token in OFFICIAL_IDS} == OFFICIAL_IDS
    assert tokenizer.convert_tokens_to_ids(ORIGINAL_ADDED_TOKENS) == list(range(BART_VOCAB_SIZE, 51289))
    assert len(tokenizer) == 51290 and tokenizer.image_token_id == 51289
    # florence-community/Florence-2-base's 51,328 rows: 51,290 tokens padded to a multiple of 64.
    assert converted.get_input_embeddings().weight.shape[0] == converted.config.text_config.vocab_size == 51328


def test_embedding_rows_are_padded_to_a_multiple_of_64_starting_at_the_mean(native, converted_dir):
    model, processor = native
    converted, converted_processor = loading.load(str(converted_dir))
    rows = converted.get_input_embeddings().weight
    assert len(converted_processor.tokenizer) == 1976 and rows.shape[0] == 1984  # 31 x 64
    assert converted.config.text_config.vocab_size == 1984 and converted.lm_head.weight.data_ptr() == rows.data_ptr()
    kept = model.get_input_embeddings().weight[kept_rows(processor)]
    torch.testing.assert_close(rows[: len(kept)], kept, rtol=0, atol=0)
    # <image> and the padding: rows the original lacked, each the mean of the original ones.
    torch.testing.assert_close(rows[len(kept):], kept.mean(dim=0).expand(1984 - len(kept), -1))


def test_generation_config_keeps_the_decoding_defaults_of_the_original_text_config(converted_dir):
    """As the hub's native checkpoints have them: beam search over 3, no repeated 3-grams, forced BOS/EOS;
    not the original's output_attentions, which would change what generate returns."""
    saved = json.loads((converted_dir / "generation_config.json").read_text())
    assert {key: saved.get(key) for key in ("num_beams", "no_repeat_ngram_size", "early_stopping",
                                            "forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id",
                                            "bos_token_id", "eos_token_id", "pad_token_id")} == {
        "num_beams": 3, "no_repeat_ngram_size": 3, "early_stopping": True, "forced_bos_token_id": 0,
        "forced_eos_token_id": 2, "decoder_start_token_id": 2, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    assert not saved.get("output_attentions") and not saved.get("return_dict_in_generate")
    converted, _ = loading.load(str(converted_dir))
    assert (converted.generation_config.num_beams, converted.generation_config.no_repeat_ngram_size) == (3, 3)
