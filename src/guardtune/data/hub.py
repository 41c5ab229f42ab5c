"""Loading hub datasets by id through `datasets.load_dataset`, with a clear way out when offline.

A local copy of a hub dataset repository (same files, same README `configs:`) under
`<data root>/hub/<owner>/<name>` is used instead of the hub when it exists; this is also how the loaders are
tested offline, on small fixtures written in the upstream format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guardtune.data.intake import Intake, Location
from guardtune.paths import data_root


class HubUnavailable(RuntimeError):
    """The hub could not be reached (or the dataset is gated) and no local copy exists."""


def local_copy(hub_id: str) -> Path | None:
    candidate = data_root() / "hub" / hub_id
    return candidate if candidate.is_dir() else None


def open_hub(hub_id: str, config: str | None, split: str) -> Any:
    import datasets

    source = hub_id if Path(hub_id).is_dir() else str(local_copy(hub_id) or hub_id)
    try:
        return datasets.load_dataset(source, name=config, split=split)
    except (ConnectionError, OSError) as err:
        if Path(source).is_dir():
            raise
        raise HubUnavailable(
            f"could not load {hub_id!r} (config {config}, split {split}) from the Hugging Face hub: {err}\n"
            f"  - check the network and HF_ENDPOINT, and unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE;\n"
            f"  - for gated datasets, accept the terms on the dataset page and run `huggingface-cli login`;\n"
            f"  - or, on a machine with access, run `huggingface-cli download --repo-type dataset {hub_id} "
            f"--local-dir DIR` and copy DIR to {data_root() / 'hub' / hub_id} (the data root is "
            f"$GUARDTUNE_DATA_DIR)."
        ) from err


def hub_rows(hub_id: str, config: str | None, split: str, intake: Intake) -> Iterator[tuple[Location, dict]]:
    dataset = open_hub(hub_id, config, split)
    label = f"hub:{hub_id}" + (f"[{config}]" if config else "") + f"/{split}"
    for i, row in enumerate(dataset, start=1):
        yield Location(label, "row", i), row
