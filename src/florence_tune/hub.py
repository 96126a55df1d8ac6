"""Fail fast when the Hugging Face hub cannot be reached.

Without this, a machine with no network spends close to a minute in the hub client's retries
before it reports anything. One quick TCP probe decides: when the hub is unreachable we switch the
hub libraries to offline mode, so anything already in the local cache still loads and anything
else fails at once with our one-line message.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from florence_tune.errors import UsageError

log = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> bool:
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if offline_requested():
        return False
    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def prepare_for_hub() -> bool:
    """Call before loading a hub id; returns whether the hub is online."""
    if hub_reachable():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    # The libraries read the variable once at import; set their flags too (public module attributes).
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:  # datasets is a dependency, but keep model loading independent of it
        pass
    return False


# --- uploading -----------------------------------------------------------------------------------


def check_can_push(repo_id: str) -> None:
    """Refuse, before any work, a push that cannot happen: no token, offline mode, a malformed repository id."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if offline_requested():
        raise UsageError("--push-to-hub with HF_HUB_OFFLINE set: unset it, or push later with "
                         "'hf upload REPO RUN/final'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"--hub-model-id '{repo_id}' is not a repository id ({str(exc).splitlines()[0]})") from None
    if not get_token():
        raise UsageError("--push-to-hub needs a Hugging Face token: run 'hf auth login', or set HF_TOKEN")


def upload(repo_id: str, files: dict[str, Path], *, private: bool, message: str) -> str:
    """Create the model repository if needed and commit ``files`` (path in the repository → local file) in one
    commit; returns the repository's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="model")
    return f"https://huggingface.co/{repo_id}"
