"""``florence-tune convert ORIGINAL_DIR NATIVE_DIR``: an original-layout (remote-code) checkpoint → native,
running none of its code (the conversion itself: model/convert.py).

    florence-tune convert ./Florence-2-base-ft ./Florence-2-base-ft-native
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from florence_tune import paths
from florence_tune.config import ConvertConfig
from florence_tune.errors import UsageError
from florence_tune.model import convert, loading


def run(config: ConvertConfig) -> Path:
    """Returns the folder of the native checkpoint."""
    source, destination = _check_paths(config.source, config.destination, config.overwrite)
    original = convert.read_original_config(source)
    state = convert.load_weights(source)
    native_state = convert.rename_weights(state)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = convert.build_tokenizer(source, Path(scratch))
    model = convert.build_model(original, native_state, tokenizer)
    processor = convert.build_processor(source, tokenizer, model.config)
    if destination.exists():
        shutil.rmtree(destination)
    return loading.save(model, processor, destination)


def _check_paths(source: str | None, destination: str | None, overwrite: bool) -> tuple[Path, Path]:
    if not source or not destination:
        raise UsageError("convert needs SOURCE and DESTINATION folders: florence-tune convert ORIGINAL_DIR NATIVE_DIR")
    src, dst = Path(source).expanduser(), Path(destination).expanduser()
    if not (src / "config.json").is_file():
        raise UsageError(f"'{src}' holds no config.json; pass the folder of an original Florence-2 checkpoint")
    if dst.resolve() == src.resolve():
        raise UsageError("DESTINATION must differ from SOURCE (the original stays untouched)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        if not overwrite:
            raise UsageError(f"destination '{dst}' is not empty; pass --overwrite to replace it or choose another "
                             "folder")
        paths.check_replaceable_folder(dst, paths.local_inputs(str(src)), "DESTINATION")
    paths.check_creatable(dst, "DESTINATION")
    if paths.resolved(dst).is_relative_to(paths.resolved(src)):
        raise UsageError(f"DESTINATION '{dst}' lies inside SOURCE; the original stays untouched, choose a folder "
                         "outside it")
    return src, dst
