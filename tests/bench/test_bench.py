"""``florence-tune bench``: runs on a CPU in seconds, ends with valid JSON; the naive reference computes the
same loss; FLOP counts match the reference figures; the GPU suite is runnable (dry run); the train flags."""

import json

import pytest
import torch

from florence_tune.batch.pages import PixelSpec
from florence_tune.bench import naive as bench_naive
from florence_tune.bench import parts as bench_parts
from florence_tune.bench import suite
from florence_tune.cli import main
from florence_tune.model import page_path

SMALL = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--pages", "2", "--page-size", "400x520",
         "--workers", "1", "--question-tokens", "8", "--answer-tokens", "4"]


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_bench_on_cpu_prints_a_table_then_json(capsys, tmp_path):
    output = tmp_path / "bench.json"
    assert main(["bench", *SMALL, "--compare", "naive", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    result = last_json_line(printed)
    assert "samples_per_s" in printed and result == json.loads(output.read_text())
    assert result["train"]["samples_per_s"] > 0 and result["train"]["naive"]["samples_per_s"] > 0
    assert result["train"]["mfu"] is None  # no peak to divide by on a CPU
    assert {"uint8_samples_per_s", "cached_samples_per_s", "naive_samples_per_s"} <= set(result["loader"])
    assert result["eval"]["questions"] == result["loader"]["questions"] > 0
    assert {"train_vs_naive", "e2e_vs_naive", "loader_cached_vs_naive", "eval_vs_naive"} <= set(result["ratios"])


def test_bench_rejects_bad_settings(capsys):
    assert main(["bench", "--parts", "train,warp"]) == 2
    assert main(["bench", "--feature-cache"]) == 2
    assert "freeze-vision" in capsys.readouterr().err


def test_naive_reference_and_fast_path_give_the_same_loss(fresh_tiny):
    model, processor = fresh_tiny
    model.train()
    spec = PixelSpec.from_processor(processor)
    batch = bench_parts.synthetic_batch(processor, batch_size=6, question_tokens=9, answer_tokens=5,
                                        questions_per_page=3, seed=2)
    with torch.no_grad():
        naive = bench_naive.loss(model, bench_parts.naive_batch(batch, spec))
        fast = model(**page_path.PagePath(spec).model_inputs(model, batch)).loss
    assert torch.allclose(naive, fast, atol=1e-6, rtol=1e-5)


def test_flops_of_base_match_the_reference_figures():
    """448 GFLOP forward (380 in the vision tower) per 768x768 page, ~20 + ~10 tokens; the depthwise
    correction removes the weight-gradient overcount torch makes."""
    model, processor = bench_parts.architectures.build("base", device="meta")
    model.train()
    batch = bench_parts.synthetic_batch(processor, batch_size=1, question_tokens=20, answer_tokens=10)
    counted = bench_parts.count_flops(model, batch, PixelSpec.from_processor(processor))
    assert counted.forward / 1e9 == pytest.approx(448, rel=0.02)
    assert counted.vision_forward / 1e9 == pytest.approx(380, rel=0.02)
    assert counted.backward_uncorrected - counted.backward == pytest.approx(520e9, rel=0.05)
    assert counted.train == pytest.approx(3 * counted.forward, rel=0.05)


def test_gpu_suite_dry_run_ends_with_json(monkeypatch, capsys, tmp_path):
    """The suite's code path on tiny shapes (a trimmed variant list; compile traced with the eager backend)."""
    monkeypatch.setattr(suite, "VARIANTS", [suite.VARIANTS[1], suite.VARIANTS[4]])
    monkeypatch.setattr(suite, "COMPILED", suite.COMPILED[1:])
    output = tmp_path / "suite.json"
    assert main(["bench", "--suite", "gpu", "--dry-run", "--page-size", "400x520", "--output", str(output)]) == 0
    result = last_json_line(capsys.readouterr().out)
    assert result["dry_run"] and set(result["variants"]) == {"base_grouped", "base_cached",
                                                             "base_grouped_compiled"}
    assert result["variants"]["base_cached"]["vision_forward_gflop"] == 0
    assert result["pipeline"]["ratios"] and all(t["met"] is None for t in result["targets"].values())


def test_train_with_page_cache_and_grouping_runs_the_tower_once_per_page(tmp_path, capsys, monkeypatch):
    """The same run with and without --group-by-page: grouped batches hold fewer pages for as many questions."""
    seen: dict[str, list[tuple[int, int]]] = {"grouped": [], "plain": []}
    real = page_path.PagePath.model_inputs
    current = []

    def counting(self, model, batch):
        if model.training:
            seen[current[0]].append((len(batch["page_ids"]), len(batch["input_ids"])))
        return real(self, model, batch)

    monkeypatch.setattr(page_path.PagePath, "model_inputs", counting)
    for name, extra in (("grouped", ["--group-by-page"]), ("plain", [])):
        current[:] = [name]
        run = tmp_path / name
        code = main(["train", "--max-steps", "4", "--batch-size", "4", "--max-train-samples", "60",
                     "--max-eval-samples", "4", "--num-beams", "1", "--max-new-tokens", "4", "--no-eval-before",
                     "--report-to", "none", "--output-dir", str(run), "--page-cache",
                     str(tmp_path / "pages"), "--gradient-checkpointing", *extra])
        assert code == 0
        summary = last_json_line(capsys.readouterr().out)
        assert summary["steps"] == 4 and summary["anls_after"] is not None
    assert list((tmp_path / "pages").glob("pages-128x128-*/pixels.npy"))
    pages = {name: sum(p for p, _ in batches) for name, batches in seen.items()}
    questions = {name: sum(q for _, q in batches) for name, batches in seen.items()}
    assert questions["grouped"] == questions["plain"] == 16
    assert pages["grouped"] < pages["plain"], (seen, "grouping should put a page's questions in one batch")


def test_bench_prepares_the_model_with_the_code_training_runs(monkeypatch, tmp_path, capsys):
    """--gradient-checkpointing in bench measures the mechanism train uses: one function, same arguments."""
    from florence_tune.model import acceleration

    calls = []
    real = acceleration.prepare

    def recording(model, **kwargs):
        calls.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(acceleration, "prepare", recording)
    assert main(["bench", "--parts", "train", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                 "--gradient-checkpointing"]) == 0
    assert main(["train", "--max-steps", "1", "--batch-size", "2", "--eval-split", "none", "--report-to", "none",
                 "--gradient-checkpointing", "--output-dir", str(tmp_path / "run")]) == 0
    assert len(calls) == 2 and calls[0] == calls[1] == {"gradient_checkpointing": True, "compile_backend": None}
