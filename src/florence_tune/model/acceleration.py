"""Training-time speed and memory options, applied the same way by ``train`` and by ``bench``.

    florence-tune train --gradient-checkpointing          # BART layers and DaViT blocks recompute in backward
    florence-tune train --compile                         # both towers through torch.compile
    florence-tune bench --gradient-checkpointing --parts train   # measures exactly what training runs

``prepare`` is the one entry: the Trainer is not asked to checkpoint on its own, so the benchmark's
memory figures describe the mechanism training uses.
"""

from __future__ import annotations

import functools

import torch

from florence_tune.model.page_path import base_model, vision_trains


def prepare(model, *, gradient_checkpointing: bool = False, compile_backend: str | None = None) -> None:
    """Activation checkpointing (BART layers, and the DaViT blocks when the tower trains), compilation,
    and TF32 for the float32 matmuls that remain under bf16 autocast on CUDA."""
    if gradient_checkpointing:
        checkpoint_text_layers(model)
        if vision_trains(model):
            checkpoint_vision_blocks(model)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compile_backend:
        compile_towers(model, backend=compile_backend)


def checkpoint_vision_blocks(model) -> int:
    """Recompute each DaViT block in the backward pass instead of storing its activations.

    ``gradient_checkpointing_enable()`` covers only the BART layers, while the vision tower holds
    ~92 % of the activation memory at 768x768. The block's ``forward`` is wrapped on the instance, so
    parameter names, state dicts and checkpoints are unchanged. Returns how many blocks were wrapped.
    """
    from transformers.models.florence2.modeling_florence2 import Florence2VisionBlock

    wrapped = 0
    for module in model.modules():
        if isinstance(module, Florence2VisionBlock) and "forward" not in vars(module):
            module.forward = functools.partial(_checkpointed, module.forward)
            wrapped += 1
    return wrapped


def checkpoint_text_layers(model) -> None:
    """The BART layers' own activation checkpointing (non-reentrant, like the DaViT blocks')."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # newer name; older releases lack it
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _checkpointed(forward, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return forward(hidden_states)
    from torch.utils.checkpoint import checkpoint

    # Non-reentrant: works when the block's input needs no gradient (frozen stem) and under compile.
    return checkpoint(forward, hidden_states, use_reentrant=False)


# --- compilation ---------------------------------------------------------------------------------


def compile_towers(model, backend: str = "inductor") -> None:
    """``torch.compile`` the vision tower and the BART encoder-decoder in place (names unchanged).

    Compiling the two towers rather than the whole model lets the per-page path call the vision tower
    on its own and still get the compiled graph. Batches should come in a few fixed shapes
    (``PixelCollator`` pads lengths to multiples of 32 under --compile).
    """
    florence = base_model(model).model
    florence.vision_tower.compile(backend=backend)
    florence.language_model.compile(backend=backend)
