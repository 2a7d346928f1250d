"""One switch for every progress bar a command shows: ours, the toy world's, the Trainer's, transformers' loading bars.

Why an environment variable: the toy world trains its models in spawned worker processes, which inherit the
environment but not a flag set in this interpreter; `HF_HUB_DISABLE_PROGRESS_BARS` carries the same switch to
transformers and huggingface_hub there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DISABLE_VARIABLE = "ANTIDISTILL_NO_PROGRESS"
_HUB_VARIABLE = "HF_HUB_DISABLE_PROGRESS_BARS"


@contextlib.contextmanager
def progress_bars_hidden() -> Iterator[None]:
    """Hide progress bars inside the block, in this process and in the processes it starts (`--no-progress`).

    Restores the previous state afterwards, so a command run in-process (tests, notebooks) leaves nothing behind.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    saved = {name: os.environ.get(name) for name in (DISABLE_VARIABLE, _HUB_VARIABLE)}
    hub_was_disabled, transformers_was_enabled = are_progress_bars_disabled(), logging.is_progress_bar_enabled()
    os.environ[DISABLE_VARIABLE] = os.environ[_HUB_VARIABLE] = "1"
    disable_progress_bars()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not hub_was_disabled:
            enable_progress_bars()
        if transformers_was_enabled:
            logging.enable_progress_bar()


def progress_enabled() -> bool:
    """False inside `progress_bars_hidden`, here or in a parent process."""
    return os.environ.get(DISABLE_VARIABLE, "").lower() not in ("1", "true", "yes")
