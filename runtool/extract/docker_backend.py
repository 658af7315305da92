"""The Docker extraction backend: ``python -m runtool.extract`` in a container built from local parts.

Why a container at all: the extractor then runs with its own pinned dependencies, unprivileged, without
network, and with the bags mounted read-only, whatever else the caller's environment holds.

No registry is reachable, so nothing is pulled. The base image (``runtool-base:bookworm``, a debootstrapped
Debian with python3) comes from ``scripts/docker-base-image.sh``; :func:`ensure_image` builds the extractor
image on it from ``runtool/extract/Dockerfile`` and a wheelhouse made on the host: the runtool wheel plus
the extractor's dependencies, downloaded for the image's Python and glibc but pinned to the versions
installed on the host, so both backends write the same bytes. The image carries a fingerprint of
everything it was built from (runtool sources, Dockerfile, base image, host package versions): a changed
checkout is rebuilt instead of silently running old code under the same tag.

:func:`run_in_docker` mounts the bags at ``/data`` (read-only) and the output folder at ``/output`` with
``Mount`` objects rather than ``-v host:container`` strings, because run folder names contain ``:``. The
container runs as the caller's uid:gid, so the outputs belong to the caller, not to root. Bind mounts name
paths on the engine's machine: the engine must be local.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import runtool
from runtool.config import DEFAULT_MAX_CHUNK_BYTES
from runtool.errors import RuntoolError
from runtool.extras import MissingExtraError, require_extra

__all__ = [
    "BASE_IMAGE",
    "EXTRACTOR_REQUIREMENTS",
    "IMAGE_TAG",
    "DockerBackendError",
    "docker_available",
    "ensure_image",
    "run_in_docker",
]

BASE_IMAGE = "runtool-base:bookworm"
"""The local base image, made by ``scripts/docker-base-image.sh``."""

IMAGE_TAG = f"runtool-extractor:{runtool.__version__}"
"""The extractor image's default tag."""

EXTRACTOR_REQUIREMENTS: tuple[str, ...] = (
    "rosbags",
    "numpy",
    "pyarrow",
    "pyyaml",
    "pandas",  # the Parquet outputs carry pandas metadata (nullable Int64 columns read back as such)
)
"""What the image installs besides runtool (their own dependencies follow); versions pinned to the host's."""

DOCKERFILE = Path(__file__).with_name("Dockerfile")

_FINGERPRINT_LABEL = "org.runtool.fingerprint"
_IMAGE_LABEL = "org.runtool.image"  # set by the Dockerfile
_BAGS_MOUNT = "/data"
_OUTPUT_MOUNT = "/output"
_LOG_TAIL = 20
_STOP_TIMEOUT_S = 10
_CANCEL_POLL_S = 0.2
_EXIT_MEANINGS = {1: "nothing could be extracted", 2: "bad arguments", 137: "killed"}
_NOT_RUNNING = "Docker is not running: start dockerd or use --backend local."
_NOT_ALLOWED = (
    "Docker is running but this user may not use it: add the user to the docker group or use --backend local."
)
# Run in the base image to learn which wheels it can install.
_PLATFORM_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'implementation': sys.implementation.name, "
    "'libc': platform.libc_ver(), 'machine': platform.machine()}))"
)
# A Requires-Dist entry: name, optional [extras], version specifiers, optional "; marker".
_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?[^;]*(?:;(?P<marker>.*))?"
)
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
# The manylinux tags older than PEP 600, with the glibc minor each stands for.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}

ProgressLine = Callable[[str], None]


class DockerBackendError(RuntoolError):
    """The Docker backend could not build its image or run the extractor (or was cancelled)."""


def docker_available() -> str | None:
    """Why the Docker backend cannot run here, as one sentence for the user; ``None`` when it can.

    Lets a page or the command line offer the backend (or explain its absence) before any work starts.
    """
    try:
        with _connect():
            return None
    except (DockerBackendError, MissingExtraError) as exc:
        return str(exc)


def ensure_image(
    tag: str = IMAGE_TAG,
    base: str = BASE_IMAGE,
    progress: ProgressLine | None = None,
) -> str:
    """Build the extractor image unless an image built from exactly these sources is already there.

    Cheap when the image is current (hashes the sources, asks the engine for two images), so it can be
    called before every run. ``progress`` receives human-readable lines of a build. Returns ``tag``.

    Raises:
        DockerBackendError: Docker is not usable, the base image is missing or has no Python, the wheels
            cannot be downloaded, or the build fails (with the last lines of its log).
        MissingExtraError: the docker SDK is not installed (the ``[docker]`` extra).
    """
    with _connect() as client:
        return _ensure_image(client, tag, base, progress)


def run_in_docker(
    bags_dir: Path,
    out_dir: Path,
    timestamp: str,
    topics: Mapping[str, str],
    progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    *,
    image: str = IMAGE_TAG,
    base: str = BASE_IMAGE,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> None:
    """Extract the bags in ``bags_dir`` into the existing empty folder ``out_dir`` inside a container.

    ``max_chunk_bytes`` is passed to the extractor (see :func:`~runtool.extract.outputs.extract_bags`).

    Builds the image first if needed (see :func:`ensure_image`; call it yourself to show build progress).
    Each JSON object the extractor prints goes to ``progress`` as it is printed. Setting ``cancel`` stops
    the container. The container is removed afterwards in every case.

    Raises:
        DockerBackendError: the image could not be built, the container could not run, the extractor
            exited non-zero (with its last output lines), or ``cancel`` was set.
        MissingExtraError: the docker SDK is not installed (the ``[docker]`` extra).
    """
    with _connect() as client:
        _ensure_image(client, image, base, None)
        _run(client, image, bags_dir, out_dir, timestamp, topics, progress, cancel, max_chunk_bytes)


def _run(
    client: Any,
    image: str,
    bags_dir: Path,
    out_dir: Path,
    timestamp: str,
    topics: Mapping[str, str],
    progress: Callable[[dict[str, Any]], None] | None,
    cancel: threading.Event | None,
    max_chunk_bytes: int,
) -> None:
    if not bags_dir.is_dir():
        raise DockerBackendError(f"Cannot extract {bags_dir}: it is not a folder.")
    if not out_dir.is_dir():
        raise DockerBackendError(f"Cannot extract into {out_dir}: it is not a folder.")
    if cancel is not None and cancel.is_set():
        raise DockerBackendError("Extraction cancelled before the container started.")
    docker = _sdk()
    command = ["--bags-dir", _BAGS_MOUNT, "--out", _OUTPUT_MOUNT, "--timestamp", timestamp]
    command += ["--topics-json", json.dumps(dict(topics)), "--max-chunk-bytes", str(max_chunk_bytes)]
    mounts = [
        docker.types.Mount(_BAGS_MOUNT, str(bags_dir.resolve()), type="bind", read_only=True),
        docker.types.Mount(_OUTPUT_MOUNT, str(out_dir.resolve()), type="bind"),
    ]
    try:
        # init: PID 1 then forwards SIGTERM, so a cancel stops Python at once instead of after the timeout.
        container = client.containers.create(
            image,
            command,
            mounts=mounts,
            user=f"{os.getuid()}:{os.getgid()}",
            network_disabled=True,
            init=True,
            labels={"org.runtool.timestamp": timestamp},
        )
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"Could not create the extractor container from {image}: {exc}") from exc
    try:
        _follow(container, progress, cancel)
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException as exc:
            raise DockerBackendError(f"Could not remove the extractor container {container.short_id}: {exc}") from exc


def _sdk() -> Any:
    """The docker SDK, imported on first use: only this backend needs it, and it is the ``[docker]`` extra."""
    return require_extra("docker", "docker")


@contextlib.contextmanager
def _connect() -> Iterator[Any]:
    """A client of the engine named by the environment (``DOCKER_HOST`` or the local socket), closed after."""
    docker = _sdk()
    try:
        # from_env asks the engine for its API version, so an unreachable engine fails here.
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        # The socket error is only in the message text (the SDK wraps the requests error).
        raise DockerBackendError(_NOT_ALLOWED if "Permission denied" in str(exc) else _NOT_RUNNING) from exc
    with contextlib.closing(client):
        yield client


def _ensure_image(client: Any, tag: str, base: str, progress: ProgressLine | None) -> str:
    docker = _sdk()
    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound as exc:
        raise DockerBackendError(
            f"The base image {base} is missing and there is no registry to pull it from: "
            "build it with scripts/docker-base-image.sh (as root)."
        ) from exc
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"Could not look up the base image {base}: {exc}") from exc
    root = _project_root()
    sources = _source_files(root)
    pins = _host_pins()
    fingerprint = _fingerprint(root, sources, base_id, pins)
    if _image_fingerprint(client, tag) == fingerprint:
        return tag
    with _build_lock():
        # Another thread or process may have built it while this one waited for the lock.
        if _image_fingerprint(client, tag) == fingerprint:
            return tag
        _build_image(client, tag, base, fingerprint, root, sources, pins, progress)
    return tag


def _image_fingerprint(client: Any, tag: str) -> str | None:
    docker = _sdk()
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"Could not look up the image {tag}: {exc}") from exc
    fingerprint = labels.get(_FINGERPRINT_LABEL)
    return str(fingerprint) if fingerprint is not None else None


def _project_root() -> Path:
    """The source checkout runtool is imported from: the image installs a wheel built from it."""
    root = Path(runtool.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise DockerBackendError(
            f"The extractor image is built from a runtool source checkout, but runtool is imported from {root}, "
            "which has no pyproject.toml: install runtool from its checkout (pip install -e .)."
        )
    return root


def _source_files(root: Path) -> list[Path]:
    """What the runtool wheel is built from, relative to ``root``, in a stable order."""
    package = root / "runtool"
    files = [
        path.relative_to(root)
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    files += [Path(name) for name in ("pyproject.toml", "README.md") if (root / name).is_file()]
    return sorted(files)


def _host_pins() -> list[str]:
    """``name==version`` on the host of the extractor's requirements and everything they need.

    Pins the image to the host's versions, so both backends write the same bytes. Only this closure, not
    every installed package, so installing an unrelated tool does not rebuild the image. Dependencies
    behind an environment marker are included whatever the marker says: a pin too many is harmless.
    """
    pins: dict[str, str] = {}
    pending = [(_normalize(name), frozenset[str]()) for name in EXTRACTOR_REQUIREMENTS]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # needed on the image's platform only; pip picks its version
        pins[name] = dist.version
        for requirement in dist.requires or []:
            match = _REQUIREMENT.match(requirement)
            if match is None:
                raise DockerBackendError(f"Cannot read the requirement {requirement!r} of {name} {dist.version}.")
            extra = _EXTRA_MARKER.search(match["marker"] or "")
            if extra is None or extra[1] in extras:
                wanted = frozenset(_normalize(e) for e in (match["extras"] or "").split(",") if e.strip())
                pending.append((_normalize(match["name"]), wanted))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _fingerprint(root: Path, sources: Sequence[Path], base_id: str, pins: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (DOCKERFILE.read_bytes(), base_id.encode(), "\n".join(pins).encode()):
        digest.update(part + b"\0")
    for source in sources:
        digest.update(source.as_posix().encode() + b"\0" + (root / source).read_bytes() + b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time across threads and processes (a bulk extraction starts many runs at once)."""
    lock_path = _cache_dir() / "extractor-image.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runtool"


def _build_image(
    client: Any,
    tag: str,
    base: str,
    fingerprint: str,
    root: Path,
    sources: Sequence[Path],
    pins: Sequence[str],
    progress: ProgressLine | None,
) -> None:
    report = progress or (lambda line: None)
    platform = _probe_platform(client, base)
    wheelhouse = _wheelhouse(platform, pins, report)
    with tempfile.TemporaryDirectory(prefix="runtool-image-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(wheelhouse, context / "deps")
        shutil.copy2(DOCKERFILE, context / "Dockerfile")
        # Built from a copy, so the build leaves no build/ or egg-info folders in the checkout.
        source = Path(tmp) / "source"
        for path in sources:
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / path, source / path)
        report(f"Building the runtool {runtool.__version__} wheel")
        _pip(["wheel", "--no-deps", "--wheel-dir", str(context / "runtool"), str(source)], "Building the runtool wheel")
        report(f"Building {tag} on {base}")
        try:
            _docker_build(client, context, tag, base, fingerprint, report)
        finally:
            _prune(client)


def _probe_platform(client: Any, base: str) -> dict[str, Any]:
    """The base image's Python version and glibc, which decide which wheels it can install."""
    docker = _sdk()
    cannot = f"The base image {base} cannot run python3, so the extractor cannot be installed on it"
    try:
        # Not containers.run(remove=True): that leaves the container behind when it fails to start.
        container = client.containers.create(base, ["python3", "-c", _PLATFORM_PROBE], network_disabled=True)
        try:
            container.start()
            status = container.wait()
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        finally:
            container.remove(force=True)
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"{cannot}: {exc}") from exc
    if status.get("StatusCode") != 0:
        raise DockerBackendError(f"{cannot}: {_tail(output)}")
    platform: dict[str, Any] = json.loads(output)
    libc, libc_version = platform["libc"]
    if platform["implementation"] != "cpython" or libc != "glibc":
        raise DockerBackendError(
            f"The base image {base} has {platform['implementation']} on {libc or 'an unknown libc'}; "
            "the extractor image needs CPython on glibc (manylinux wheels)."
        )
    platform["glibc_minor"] = int(libc_version.split(".")[1])
    return platform


def _platform_tags(glibc_minor: int, machine: str) -> list[str]:
    """Every manylinux tag a glibc 2.``glibc_minor`` system installs: pip does not infer the older ones."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    tags += [f"{name}_{machine}" for minor, name in _LEGACY_MANYLINUX.items() if minor <= glibc_minor]
    return tags


def _wheelhouse(platform: Mapping[str, Any], pins: Sequence[str], report: ProgressLine) -> Path:
    """The extractor's dependency wheels for the image's platform, downloaded once per set of host versions.

    Kept under the user's cache folder by a hash of what decides its content, and written to a temporary
    sibling first, so a folder under its final name is always complete.
    """
    python = str(platform["python"])
    key_text = json.dumps([python, platform["glibc_minor"], platform["machine"], EXTRACTOR_REQUIREMENTS, pins])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    target = _cache_dir() / "wheelhouse" / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python.replace(".", "")
    report(f"Downloading the extractor's dependencies for {abi} on glibc 2.{platform['glibc_minor']} into {target}")
    with tempfile.TemporaryDirectory(prefix=f"{key}.", dir=target.parent) as tmp:
        staging = Path(tmp) / "wheels"
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
        staging.mkdir()
        # What the Dockerfile installs from this folder.
        (staging / "requirements.txt").write_text("\n".join(EXTRACTOR_REQUIREMENTS) + "\n", encoding="utf-8")
        platform_args = [
            arg for tag in _platform_tags(platform["glibc_minor"], platform["machine"]) for arg in ("--platform", tag)
        ]
        _pip(
            [
                "download",
                "--dest",
                str(staging),
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python,
                "--abi",
                abi,
                *platform_args,
                "--constraint",
                str(constraints),
                *EXTRACTOR_REQUIREMENTS,
            ],
            "Downloading the extractor's dependency wheels",
        )
        try:
            staging.rename(target)
        except OSError as exc:
            raise DockerBackendError(f"Could not put the wheelhouse in place at {target}: {exc}") from exc
    return target


def _pip(args: Sequence[str], what: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise DockerBackendError(
            f"{what} failed (pip exited with {completed.returncode}):\n{_tail(completed.stderr or completed.stdout)}"
        )


def _docker_build(client: Any, context: Path, tag: str, base: str, fingerprint: str, report: ProgressLine) -> None:
    docker = _sdk()
    log: deque[str] = deque(maxlen=_LOG_TAIL)
    try:
        for chunk in client.api.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base},
            labels={_FINGERPRINT_LABEL: fingerprint, "org.runtool.version": runtool.__version__},
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    log.append(line)
                    report(line)
            if "error" in chunk:
                raise DockerBackendError(
                    f"Building {tag} failed: {str(chunk['error']).strip()}\nLast lines of the build:\n" + "\n".join(log)
                )
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"Building {tag} failed: {exc}\nLast lines of the build:\n" + "\n".join(log)) from exc


def _prune(client: Any) -> None:
    """Delete the untagged images of earlier builds: replaced extractor images and failed builds' steps.

    Only images with runtool's label; the layers the current image shares with them stay, and the engine
    keeps any image a container still uses.
    """
    docker = _sdk()
    try:
        client.images.prune(filters={"dangling": True, "label": _IMAGE_LABEL})
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"Could not delete the images left by earlier builds: {exc}") from exc


def _follow(container: Any, progress: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None) -> None:
    """Start the container, pass its progress lines on as they come, and check how it ended."""
    docker = _sdk()
    finished = threading.Event()
    stop_errors: list[Exception] = []
    watcher = None
    if cancel is not None:
        watcher = threading.Thread(
            target=_stop_on_cancel, args=(container, cancel, finished, stop_errors), name="runtool-docker-cancel"
        )
    other_lines: deque[str] = deque(maxlen=_LOG_TAIL)
    try:
        container.start()
        if watcher is not None:
            watcher.start()
        for line in _lines(container.logs(stream=True, follow=True, stdout=True, stderr=False)):
            event = _progress_event(line)
            if event is None:
                other_lines.append(line)
            elif progress is not None:
                progress(event)
        status = container.wait()
        stderr = container.logs(stdout=False, stderr=True, tail=_LOG_TAIL).decode("utf-8", "replace")
    except docker.errors.DockerException as exc:
        raise DockerBackendError(f"The extractor container failed to run: {exc}") from exc
    finally:
        finished.set()
        if watcher is not None and watcher.is_alive():
            watcher.join()
    if stop_errors:
        raise DockerBackendError(f"Could not stop the extractor container: {stop_errors[0]}") from stop_errors[0]
    if cancel is not None and cancel.is_set():
        raise DockerBackendError("Extraction cancelled: the extractor container was stopped.")
    code = int(status.get("StatusCode", -1))
    if code != 0:
        meaning = _EXIT_MEANINGS.get(code, "failed")
        last = _tail(stderr) or "\n".join(other_lines) or "(no output)"
        raise DockerBackendError(f"The extractor exited with code {code} ({meaning}):\n{last}")


def _stop_on_cancel(
    container: Any, cancel: threading.Event, finished: threading.Event, errors: list[Exception]
) -> None:
    """Stop the container once ``cancel`` is set; polls, since one thread cannot wait on two events."""
    docker = _sdk()
    while not finished.is_set():
        if cancel.wait(_CANCEL_POLL_S):
            try:
                container.stop(timeout=_STOP_TIMEOUT_S)
            except docker.errors.DockerException as exc:
                errors.append(exc)
            return


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from a log stream, whose chunks follow writes, not lines."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _progress_event(line: str) -> dict[str, Any] | None:
    """The progress event on a stdout line, or ``None`` for any other output (kept for error messages)."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL:])
