"""The embedded tiny Florence-2: a real ``Florence2ForConditionalGeneration`` small enough for a CPU.

``florence-tune train`` with no arguments fine-tunes this model, and every test runs on it, so the
whole tool works with no model hub. It is built deterministically (fixed seed, tokenizer files
shipped with the package), saved with ``save_pretrained`` and then loaded back with
``from_pretrained`` exactly like a hub checkpoint.

Rebuild the shipped tokenizer files (only needed when the corpus below changes)::

    python -m florence_tune.model.tiny --write-tokenizer-files
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from florence_tune.paths import cache_root

TINY_VERSION = "5"  # bumped whenever what the tiny model is built from changes (5: Florence-2's parser settings)
IMAGE_SIZE = 128
# The vision tower downsamples by 32 (strides 4, 2, 2, 2): 4x4 spatial tokens plus one pooled token.
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // 32) ** 2 + 1
BPE_VOCAB_SIZE = 1200

# Florence-2's own added vocabulary: region/task markers and 1000 location bins per axis, in the order and
# spelling in which Microsoft's processing_florence2.py (microsoft/Florence-2-base) adds them after BART's
# vocabulary, "desciption" included: checkpoints carry these names, and convert matches them by name.
FLORENCE_MARKER_TOKENS = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{i}>" for i in range(1000)]
    + [
        "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
        "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
        "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
    ]
)
IMAGE_TOKEN = "<image>"
# Florence-2's parsers of generated text (the processor refuses tasks missing here), for the tiny model and for
# converted checkpoints alike, as transformers' official conversion gives them to the processor
# (src/transformers/models/florence2/convert_florence2_original_pytorch_to_hf.py, huggingface/transformers);
# the phrases are those Microsoft's processing_florence2.py drops from grounding (its black list, 72 phrases).
_GROUNDING_BANNED = (
    "I", "me", "mine", "myself", "you", "your", "yours", "yourself", "yourselves",
    "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself",
    "we", "us", "our", "ours", "ourselves", "they", "them", "their", "theirs", "themselves",
    "one", "oneself", "each other", "one another", "this", "that", "these", "those",
    "who", "whom", "whose", "which", "what", "all", "another", "any", "anybody", "anyone", "anything",
    "each", "everybody", "everyone", "everything", "few", "many", "nobody", "none", "several",
    "some", "somebody", "someone", "something", "the image", "image", "images", "the", "a", "an",
    "a group", "other objects", "lots", "a set",
)
POST_PROCESSOR_CONFIG = {
    # The official keys; transformers' parser reads "PATTERN"/"AREA_THRESHOLD", whose defaults are these values.
    "ocr": {"pattern": r"(.+?)" + r"<loc_(\d+)>" * 8, "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": list(_GROUNDING_BANNED)},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}
# Same normalisation constants as the published Florence-2 checkpoints (ImageNet statistics).
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


def tiny_dir() -> Path:
    """Build the tiny model on first use and return its directory (a normal HF checkpoint folder)."""
    target = cache_root() / f"tiny-v{TINY_VERSION}"
    if (target / "READY").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private temporary folder and rename, so concurrent or interrupted builds never
    # leave a half-written checkpoint behind.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        model, processor = build_tiny()
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "READY").write_text(TINY_VERSION)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "READY").exists():  # someone else won the race only if READY is there
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tokenizer():
    """Byte-level BPE tokenizer (BART layout) carrying Florence-2's special tokens."""
    from transformers import BartTokenizer

    files = resources.files("florence_tune") / "assets" / "tiny_tokenizer"
    vocab = json.loads((files / "vocab.json").read_text())
    merges = [tuple(line.split(" ")) for line in (files / "merges.txt").read_text().splitlines() if line]
    return BartTokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens=FLORENCE_MARKER_TOKENS,
        model_specific_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_processor(tokenizer):
    from transformers import CLIPImageProcessorPil, Florence2Processor

    image_processor = CLIPImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        image_seq_length=IMAGE_SEQ_LENGTH,
    )
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                              post_processor_config=POST_PROCESSOR_CONFIG)


def build_config(tokenizer):
    from transformers import BartConfig, Florence2Config

    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_position_embeddings=1024,  # the same 1024-position budget as the real checkpoints
        dropout=0.0,
        # 1/sqrt(d_model): with BART's 0.02 (tuned for d_model=1024) the cross-attention of a 64-wide
        # model starts so weak that the decoder learns a language model and ignores the encoder.
        init_std=0.125,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        depths=[1, 1, 1, 1],
        embed_dim=[16, 32, 64, 128],
        num_heads=[1, 2, 4, 8],
        num_groups=[1, 2, 4, 8],
        window_size=4,
        projection_dim=64,
        drop_path_rate=0.0,
        initializer_range=0.125,
    )
    return Florence2Config(
        text_config=text.to_dict(), vision_config=vision, image_token_id=tokenizer.image_token_id
    )


def build_tiny(seed: int = 0):
    """Return a freshly initialised (model, processor); same seed, same weights."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config)
    return model.eval(), processor


def _tokenizer_corpus() -> list[str]:
    """Fixed English text the tiny BPE vocabulary is learned from (documents, forms, questions)."""
    words = (
        "what is the total amount due on this invoice receipt form table page document type colour color "
        "red green blue yellow purple orange white black grey gray brown pink date name number customer "
        "vendor company address phone email city street account balance tax subtotal price quantity item "
        "description unit paid payment cash card change thank you signature approved department employee "
        "manager report annual quarterly year month day january february march april may june july august "
        "september october november december monday tuesday wednesday thursday friday who where when which "
        "how many much does do are was were has have of in on at to for from by with and or not yes no "
        "header footer title section row column cell first last next previous order reference code id "
        "shown written printed issued bill ship store shop market limited ltd inc corp group services "
        "the image describe locate objects text region caption detailed question answer"
    ).split()
    digits = [f"{i}" for i in range(100)] + ["$", ".", ",", ":", "/", "-", "#", "%", "?", "(", ")"]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += [w.capitalize() for w in words] + digits
    return lines * 4


def write_tokenizer_files(out_dir: Path) -> None:
    """Learn the BPE merges from the fixed corpus (deterministic) and write vocab.json/merges.txt."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False, indent=0))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out_dir / "merges.txt").write_text("\n".join(merges) + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-tokenizer-files"]:
        write_tokenizer_files(Path(__file__).parent.parent / "assets" / "tiny_tokenizer")
    else:
        print(__doc__)
