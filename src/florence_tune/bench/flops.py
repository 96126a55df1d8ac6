"""FLOPs of a training step, counted once with torch's ``FlopCounterMode`` (on the meta device, so it
costs no memory and no time), corrected for depthwise convolutions; device peaks for MFU.

    florence-tune bench --model base      # prints GFLOP per sample next to samples/s and MFU

Reference figures for a 768x768 page with ~20 question and ~10 answer tokens: the forward pass of
Florence-2 base is ~448 GFLOP (the DaViT vision tower 380 of it, 85 %), large ~1,723 GFLOP; forward +
backward ~3x the forward. Running the tower once per page (DocVQA: 3.9 questions per page) brings
full fine-tuning of base to ~500 GFLOP per question.

The correction: torch's formula for the backward of a convolution ignores ``groups`` in the
weight-gradient term, so for a depthwise convolution (groups = channels, as in every DaViT block)
it counts channels-times too much — for base it reports ~557 GFLOP of vision backward where ~37 are
done. ``_conv_backward_flop`` divides that term by ``groups``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# bf16 dense matmul throughput we hold a step against (TFLOP/s). The H100 figure is the one the
# throughput issue uses (what large bf16 GEMMs reach on an H100 SXM); the H200 has the same compute.
PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


@dataclass
class StepFlops:
    """FLOPs per sample of one training step (model FLOPs: no activation recomputation)."""

    forward: float
    vision_forward: float
    backward: float
    backward_uncorrected: float

    @property
    def train(self) -> float:
        return self.forward + self.backward

    def as_gflop(self) -> dict[str, float]:
        return {"forward_gflop": self.forward / 1e9, "vision_forward_gflop": self.vision_forward / 1e9,
                "train_gflop": self.train / 1e9, "backward_gflop": self.backward / 1e9,
                "backward_gflop_uncorrected_by_torch": self.backward_uncorrected / 1e9}


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """torch's ``conv_backward_flop`` with the weight-gradient term divided by ``groups``."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    count = 0
    if output_mask[0]:  # grad_input: a transposed convolution with the (already per-group) weight
        count += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0]), not transposed)
    if output_mask[1]:  # grad_weight: each output channel sees only its group's input channels
        grad_weight = list(out_shape[1])
        if transposed:
            count += conv_flop_count(t(grad_out_shape), t(x_shape), t(grad_weight), transposed=False) // groups
        else:
            count += conv_flop_count(t(x_shape), t(grad_out_shape), t(grad_weight), transposed=False) // groups
    return count


def count_step(run_forward: Callable[[], torch.Tensor], batch_size: int) -> StepFlops:
    """Count one forward + backward of ``run_forward`` (it returns the loss), per sample.

    Run it on a meta-device model (shapes only) — the counts do not depend on the values.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    counted = {}
    for name, mapping in (("raw", None), ("fixed", {aten.convolution_backward: _conv_backward_flop})):
        with FlopCounterMode(display=False, custom_mapping=mapping) as forward_mode:
            loss = run_forward()
        with FlopCounterMode(display=False, custom_mapping=mapping) as backward_mode:
            loss.backward()
        counted[name] = (forward_mode, backward_mode)
    forward_mode, backward_mode = counted["fixed"]
    return StepFlops(forward=forward_mode.get_total_flops() / batch_size,
                     vision_forward=_vision_flops(forward_mode) / batch_size,
                     backward=backward_mode.get_total_flops() / batch_size,
                     backward_uncorrected=counted["raw"][1].get_total_flops() / batch_size)


def _vision_flops(mode) -> float:
    """FLOPs attributed to the vision tower module (FlopCounterMode tracks module names)."""
    counts = mode.get_flop_counts()
    # called through the model: "...model.vision_tower"; called on its own (vision.PagePath): its class name
    towers = [name for name in counts if name.endswith("vision_tower") or name == "Florence2VisionBackbone"]
    return float(max((sum(counts[name].values()) for name in towers), default=0))


def device_peak_tflops(override: float = 0.0) -> float | None:
    """Peak bf16 TFLOP/s of this GPU (``override`` wins); None on a CPU or an unknown GPU."""
    if override > 0:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def mfu(flops_per_sample: float, samples_per_s: float, peak_tflops: float | None) -> float | None:
    if not peak_tflops or not samples_per_s:
        return None
    return flops_per_sample * samples_per_s / (peak_tflops * 1e12)
