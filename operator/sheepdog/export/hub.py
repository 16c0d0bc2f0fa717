"""Publishing an export to the Hugging Face Hub: `--to hf://ORG/NAME`.

The export is first built in a local folder, exactly as a directory export would be; this
module then makes the repository (create_repo, exist_ok) and uploads the folder in one call
(upload_folder: in huggingface_hub 2.x it commits a large folder in batches and resumes an
interrupted upload, what upload_large_folder did in 1.x). The token is huggingface_hub's own:
HF_TOKEN in the environment (on a cluster, from the Secret the export Job is given) or a
`hf auth login` token on this machine; it is never part of the spec or of a command line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

from sheepdog.export.config import ExportError, is_hf

PREFIX = "hf://"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # ORG/NAME, as the hub names repositories
# Paths on a run's volume that look like ORG/NAME all the same (models/x, runs/x) are not hub ids.
VOLUME_DIRS = ("models/", "runs/")

RepoType = Literal["model", "dataset"]


def is_hub_id(name: str) -> bool:
    """Whether a model name is a hub repository id rather than a path."""
    return bool(REPO_ID.match(name)) and not name.startswith(VOLUME_DIRS)


def repo_id_of(to: str) -> str:
    """hf://ORG/NAME -> ORG/NAME; anything else is an error saying what is expected."""
    if not is_hf(to):
        raise ExportError(f"{to}: not an hf:// destination")
    repo_id = to[len(PREFIX):].strip("/")
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise ExportError(f"{to}: expected hf://ORG/NAME (a hub repository id such as hf://my-org/my-data)")
    return repo_id


def hub_api(api: Any = None) -> Any:
    """`api` as given (tests pass an HfApi of their own), else an HfApi with the token from
    huggingface_hub's own lookup; no token at all is an error before anything is built."""
    if api is not None:
        return api
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError:
        raise ExportError("hf:// needs huggingface_hub (pip install 'sheepdog[export]')") from None
    if not get_token():
        raise ExportError("hf:// needs a Hugging Face token: set HF_TOKEN (a token with write access) "
                          "or run `hf auth login`")
    return HfApi()


def push_folder(folder: Path, to: str, repo_type: RepoType, *, private: Optional[bool] = None,
                message: str, api: Any = None) -> str:
    """Create the repository of `to` if needed and upload every file of `folder` to it;
    returns the repository's URL."""
    repo_id = repo_id_of(to)
    api = hub_api(api)
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, commit_message=message)
    return str(url)
