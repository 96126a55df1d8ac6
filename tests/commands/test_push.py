"""--push-to-hub: what would be sent (the hub calls are replaced here), and a missing token refused up front."""

import pytest

from florence_tune.cli import main

QUICK = ["--max-steps", "1", "--batch-size", "2", "--max-train-samples", "4", "--max-eval-samples", "2",
         "--num-beams", "1", "--max-new-tokens", "4", "--report-to", "none"]


@pytest.fixture()
def hub_calls(monkeypatch):
    """Record create_repo / create_commit instead of talking to the hub."""
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("repo", repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: calls.append(
        ("commit", repo_id, sorted(op.path_in_repo for op in operations))))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the push itself is replaced above
        monkeypatch.delenv(name, raising=False)
    return calls


def test_push_to_hub_sends_the_model_its_processor_the_card_and_the_report(tmp_path, monkeypatch, hub_calls):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--output-dir", str(run), "--push-to-hub", "--hub-model-id", "me/florence-test",
                 "--hub-private"]) == 0
    (kind, repo, options), (_, committed_to, files) = hub_calls
    assert (kind, repo, options["private"], committed_to) == ("repo", "me/florence-test", True, "me/florence-test")
    final = sorted(p.name for p in (run / "final").iterdir())
    assert files == sorted([*final, "README.md", "report.html"]), "final/ at the repository's root, card, report"


def test_push_to_hub_without_a_token_stops_before_any_work(tmp_path, monkeypatch, capsys, hub_calls):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    for name in ("HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):  # no stored login either
        monkeypatch.setattr(constants, name, str(tmp_path / "no-login" / name))
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--output-dir", str(run), "--push-to-hub"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a Hugging Face token" in err[0] and not run.exists() and not hub_calls
