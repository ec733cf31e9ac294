"""The ``dataset.json`` of an nnU-Net raw folder, read once for every room that needs it.

Contexts from a folder (:mod:`medverse.io.context`), the evaluation's datasets and the training
datasets (:mod:`medverse.data.nnunet_raw`) all read the description through
:func:`read_dataset_json`, so a broken file gets the same message whichever command meets it.
What the fields mean stays with each reader.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    >>> read_dataset_json(root)["labels"]
    {'background': 0}
    >>> read_dataset_json(root / "missing")
    {}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medverse.errors import InputError
from medverse.types import PathLike

__all__ = ["read_dataset_json"]


def read_dataset_json(root: PathLike, *, required: bool = False) -> dict[str, Any]:
    """The ``dataset.json`` of the nnU-Net raw folder ``root`` as a dict.

    Args:
        root: the dataset folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        required: a missing file is an error; otherwise it reads as ``{}``.

    Raises:
        InputError: the file is missing (when required), not readable as JSON, or not a JSON
            object; the message names the file.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        if required:
            raise InputError(
                f"'{path}' not found; an nnU-Net raw dataset folder holds dataset.json, "
                "imagesTr/ and labelsTr/"
            )
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"'{path}': not readable as JSON ({error})") from None
    if not isinstance(meta, dict):
        raise InputError(f"'{path}': expected a JSON object, got {type(meta).__name__}")
    return meta
