"""The Docker backend's image, built locally: there is no registry to pull from (DESIGN.md §3).

``debootstrap --variant=minbase`` makes a Debian bookworm root filesystem holding Python 3.11
and pytest (programs under test run ``python -m pytest`` inside), from the mirror the machine's
own apt sources name; ``docker import`` turns it into ``ssmagent-sandbox:VERSION``. The version
is part of the tag, so changing the recipe means bumping :data:`IMAGE_VERSION`, and an existing
tag is never silently reused for a different recipe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ssmagent.sandbox.base import WORKDIR, SandboxError

IMAGE_VERSION = 1
IMAGE_REPOSITORY = "ssmagent-sandbox"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_VERSION}"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# python-is-python3 gives `python`, the name callers use; coreutils' `timeout` and GNU tar come
# with minbase (both are Essential).
PACKAGES = ("python3-minimal", "python3-pytest", "python-is-python3")
# Caches and documentation: ~140 MB of the ~270 MB debootstrap leaves, never read by a program.
TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV LANG=C.UTF-8",
    f"WORKDIR {WORKDIR}",
    f"LABEL ssmagent.sandbox.image={IMAGE_VERSION}",
)


@dataclass(frozen=True)
class BuildResult:
    """What ``build_image`` did: ``built`` is False when the tag already existed."""

    image: str
    built: bool
    seconds: float
    mirror: str | None = None
    size_bytes: int | None = None


def apt_source_texts(root: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    """(file name, text) of every apt source file apt itself would read."""
    files = [root / "sources.list"] if (root / "sources.list").is_file() else []
    files += sorted(p for p in (root / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    return [(p.name, p.read_text(errors="replace")) for p in files]


def debian_mirror(sources: Iterable[tuple[str, str]], suite: str = SUITE) -> str | None:
    """The first mirror URI that serves ``suite`` in apt sources (one-line ``.list`` or deb822
    ``.sources`` format), or None when no source does."""
    for name, text in sources:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uris, suites in entries:
            if suite in suites and uris:
                return uris[0].rstrip("/")
    return None


def _one_line_entries(text: str) -> list[tuple[list[str], list[str]]]:
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=…] options
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            entries.append(([words[0]], [words[1]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[list[str], list[str]]]:
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ", "\t")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            entries.append((fields.get("uris", "").split(), fields.get("suites", "").split()))
    return entries


def mounts_below(root: Path, mountinfo: str) -> list[str]:
    """Mount points at or under ``root``, deepest first (the order they can be unmounted in)."""
    prefix = str(root).rstrip("/") + "/"
    points = [line.split()[4] for line in mountinfo.splitlines() if len(line.split()) > 4]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def image_id(client, image: str = IMAGE) -> str | None:
    """The id of ``image``, None when there is no such image."""
    import docker

    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        return None


def image_present(client, image: str = IMAGE) -> bool:
    return image_id(client, image) is not None


def build_image(client, *, force: bool = False, mirror: str | None = None,
                log: Callable[[str], None] = lambda line: None) -> BuildResult:
    """Build and tag :data:`IMAGE` unless it exists (``force`` rebuilds). Needs root and
    debootstrap (debootstrap creates device nodes and chroots), and a reachable Debian mirror."""
    start = time.monotonic()
    previous = image_id(client)
    if previous and not force:
        return BuildResult(IMAGE, built=False, seconds=time.monotonic() - start)
    if os.geteuid() != 0:
        raise SandboxError("building the sandbox image runs debootstrap, which needs root: "
                           "run `sudo .venv/bin/ssmagent sandbox build`")
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed: apt-get install -y debootstrap")
    mirror = mirror or debian_mirror(apt_source_texts()) or DEFAULT_MIRROR
    with tempfile.TemporaryDirectory(prefix="ssmagent-image-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        try:
            _debootstrap(root, mirror, log)
            _trim(root)
            (root / WORKDIR.lstrip("/")).mkdir(exist_ok=True)
            _import(client, root, Path(tmp) / "rootfs.tar", log)
        finally:
            _unmount_below(root)
    if previous and previous != image_id(client):
        _remove_image(client, previous)
    size = client.images.get(IMAGE).attrs.get("Size")
    return BuildResult(IMAGE, built=True, seconds=time.monotonic() - start, mirror=mirror, size_bytes=size)


def _import(client, root: Path, archive: Path, log: Callable[[str], None]) -> None:
    import docker

    log(f"importing {archive.name} as {IMAGE}")
    packed = subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(archive), "."],
                            capture_output=True, text=True)
    if packed.returncode != 0:
        raise SandboxError(f"packing the root filesystem failed: {packed.stderr.strip()[-200:]}")
    try:
        client.api.import_image_from_file(str(archive), repository=IMAGE_REPOSITORY, tag=str(IMAGE_VERSION),
                                          changes=list(IMAGE_CHANGES))
    except docker.errors.APIError as err:
        raise SandboxError(f"docker import failed: {err.explanation or err}") from err


def _remove_image(client, image: str) -> None:
    """Drop the image a rebuild replaced, unless a container still uses it."""
    import docker

    try:
        client.images.remove(image)
    except docker.errors.APIError:
        return


def _debootstrap(root: Path, mirror: str, log: Callable[[str], None]) -> None:
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror]
    log(" ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise SandboxError(f"debootstrap from {mirror} failed (exit {done.returncode}): {tail[0]}; "
                           "pass a reachable Debian mirror with --mirror URL")


def _trim(root: Path) -> None:
    for relative in TRIMMED:
        directory = root / relative
        if directory.is_dir():
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def _unmount_below(root: Path) -> None:
    """debootstrap unmounts what it mounted (proc, sys, bound /dev nodes) on exit, even on
    failure; this is the second guard, so the temporary tree's removal can never reach into a
    host /dev or /proc left mounted inside it."""
    for point in mounts_below(root, Path("/proc/self/mountinfo").read_text()):
        subprocess.run(["umount", "-l", point], check=False)
