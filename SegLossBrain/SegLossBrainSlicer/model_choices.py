"""The models the user can pick: shipped with the extension and their own fine-tuned versions.

The engine's model store is asked lazily (inside the function) so that Slicer can load the module before the
engine's dependencies are installed; any failure becomes one sentence for the selector to show.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .i18n import _


@dataclass(frozen=True)
class ModelChoice:
    key: str  # what the parameter node stores: stable across sessions, unique between shipped and user models
    label: str
    path: str
    source: str
    sha256: str | None


def _label(entry) -> str:
    source = _("shipped") if entry.source == "shipped" else _("your model")
    details = [source]
    metadata = entry.metadata or {}
    for key in ("version", "created"):
        if metadata.get(key):
            details.append(str(metadata[key]))
    return f"{entry.name} ({', '.join(details)})"


def available_models() -> tuple[list[ModelChoice], str | None]:
    """(choices, message). With no usable model the list is empty and the message says why and what to do."""
    try:
        from SegLossBrainLib.models.store import NoModelError, list_models
    except ImportError as error:
        return [], _("The segmentation engine cannot be loaded yet ({error}). Click Segment to install what it "
                     "needs.").format(error=error)
    try:
        entries = list(list_models())
    except NoModelError as error:
        return [], str(error)
    except Exception as error:  # a broken store must not break the module panel
        return [], _("Could not list the models: {error}").format(error=error)
    if not entries:
        return [], _("No trained model is installed yet. Train one with 'seglossbrain train' or install an "
                     "extension update that ships one.")
    choices = [
        ModelChoice(f"{e.source}:{e.name}", _label(e), str(e.path), e.source, (e.metadata or {}).get("sha256"))
        for e in entries
    ]
    return choices, None


def active_choice(choices: list[ModelChoice]) -> ModelChoice | None:
    """The choice the engine uses when no model is named (``models.store.default_model_path()``: the user store's
    active version, else the shipped default), or None when that cannot be told (engine not installed yet,
    broken active pointer, no model) or is not among ``choices``."""
    try:
        from SegLossBrainLib.models.store import default_model_path

        active = Path(default_model_path()).resolve()
    except Exception:  # ImportError before set-up, ModelError for a broken pointer: no preference then
        return None
    for choice in choices:
        try:
            if Path(choice.path).resolve() == active:
                return choice
        except (OSError, RuntimeError):
            continue
    return None


def find_choice(choices: list[ModelChoice], key: str | None) -> ModelChoice | None:
    """The stored choice if still available, else the active model version (what the engine uses by
    default), else the first (shipped models are listed first by the engine)."""
    for choice in choices:
        if choice.key == key:
            return choice
    if not choices:
        return None
    return active_choice(choices) or choices[0]
