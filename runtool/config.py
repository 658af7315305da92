"""One configuration object: defaults < ``runtool.toml`` < environment (``RUNTOOL_*``)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from runtool.errors import RuntoolError

__all__ = ["ConfigError", "RuntoolConfig", "load_config"]

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
DEFAULT_TOPICS = {
    "image": "/sensors/triton_camera_feed/compressed",
    "detections": "/weed_detection/bboxes",
    "tracks": "/multi_object_tracking/track_bboxes",
}
# A ROS1 writer closes a chunk once it passes a threshold (768 KiB for rosbag record, 1 MiB for rosbags), so a
# real chunk holds that plus one message: a few MiB, 25 MiB with an uncompressed 4K RGB frame. Ten times the
# largest of those still bounds what one hostile chunk can make an extraction hold (ROS1's 32-bit size field
# alone allows 4 GiB per chunk, per extraction worker).
DEFAULT_MAX_CHUNK_BYTES = 256 << 20
_MAX_CHUNK_RANGE = (1 << 20, (1 << 32) - 1)


HOST_NAME = re.compile(r"[A-Za-z0-9.:\[\]-]+")
"""What ``--allowed-host`` and ``[serve] allowed_hosts`` take: a host name or an IP address (a space or a comma
names no host)."""


class ConfigError(RuntoolError):
    """A configuration value is missing or invalid; the message names the setting."""


@dataclass(frozen=True)
class RuntoolConfig:
    """Everything runtool needs to know about where data lives and how to judge it."""

    raw_bucket: str = "terra-weeder-deployments-data-raw"
    ml_bucket: str = "terra-weeder-deployments-data-ml"
    gcp_project: str | None = None
    emulator_host: str | None = None
    data_dir: Path = Path("data")
    raw_root: Path = Path("data/raw")
    processed_root: Path = Path("data/processed")
    ml_root: Path = Path("data/ML")
    cache_dir: Path = Path("data/cache")
    expected_samples_per_bag: float = 17.0
    under_labelled_pct: float = 80.0
    list_workers: int = 8
    request_retry_s: float = 30.0
    sliced_download_bytes: int = 128 * 1024 * 1024
    read_only: bool = False
    dask_scheduler: str | None = None
    serve_cull_idle_s: float = 300.0
    serve_max_kernels: int = field(default_factory=lambda: 4 * (os.cpu_count() or 1))
    serve_pool_size: int = 1
    serve_preheat: bool = True
    serve_allowed_hosts: str | None = None
    serve_token_file: str | None = None
    max_label_bytes: int = 1 << 20
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    source: str = "defaults"

    def __post_init__(self) -> None:
        for name in ("raw_bucket", "ml_bucket"):
            value = getattr(self, name)
            if not _BUCKET_NAME.fullmatch(value) or ".." in value:
                raise ConfigError(f"{name} = {value!r} is not a valid bucket name ({self.source})")
        if not self.expected_samples_per_bag > 0:
            raise ConfigError(
                f"expected_samples_per_bag = {self.expected_samples_per_bag} must be > 0 ({self.source})"
            )
        if not 0 <= self.under_labelled_pct <= 100:
            raise ConfigError(
                f"under_labelled_pct = {self.under_labelled_pct} must be within 0..100 ({self.source})"
            )
        if not 0 < self.request_retry_s <= 600:
            raise ConfigError(f"request_retry_s = {self.request_retry_s} must be within 0..600 s ({self.source})")
        if self.sliced_download_bytes < 1:
            raise ConfigError(
                f"transfers sliced_above_bytes = {self.sliced_download_bytes} must be at least 1 ({self.source})"
            )
        if not 1 <= self.list_workers <= 64:
            raise ConfigError(f"list_workers = {self.list_workers} must be within 1..64 ({self.source})")
        if not 1 <= self.max_label_bytes <= 1 << 30:
            raise ConfigError(
                f"max_label_bytes = {self.max_label_bytes} must be within 1..{1 << 30} bytes ({self.source})"
            )
        if not _MAX_CHUNK_RANGE[0] <= self.max_chunk_bytes <= _MAX_CHUNK_RANGE[1]:
            raise ConfigError(
                f"max_chunk_bytes = {self.max_chunk_bytes} must be within {_MAX_CHUNK_RANGE[0]}..{_MAX_CHUNK_RANGE[1]}"
                f" bytes (1 MiB up to ROS1's 32-bit chunk size) ({self.source})"
            )
        if not 10 <= self.serve_cull_idle_s <= 7 * 86400:
            raise ConfigError(
                f"serve cull_idle_s = {self.serve_cull_idle_s} must be within 10 s..7 days ({self.source})"
            )
        if not 1 <= self.serve_max_kernels <= 1000:
            raise ConfigError(f"serve max_kernels = {self.serve_max_kernels} must be within 1..1000 ({self.source})")
        if not 0 <= self.serve_pool_size <= 16:
            raise ConfigError(f"serve pool_size = {self.serve_pool_size} must be within 0..16 ({self.source})")
        if self.serve_allowed_hosts and not all(HOST_NAME.fullmatch(h) for h in self.serve_allowed_hosts.split(",")):
            raise ConfigError(
                f"serve allowed_hosts = {self.serve_allowed_hosts!r} must be host names or IP addresses separated by "
                f"commas ({self.source})"
            )
        if self.emulator_host and not re.fullmatch(r"https?://[^/\s]+/?", self.emulator_host):
            raise ConfigError(
                f"STORAGE_EMULATOR_HOST = {self.emulator_host!r} must look like http://127.0.0.1:4443"
            )

    def with_overrides(self, **changes: Any) -> RuntoolConfig:
        return replace(self, **changes)

    def to_toml(self, read_only: bool | None = None) -> str:
        """This configuration as a ``runtool.toml`` that :func:`load_config` reads back equal.

        A separate process (a report kernel, a Voila server) sees exactly these settings through it, even
        when they were built in code rather than loaded from a file. Paths are written absolute.
        """
        sections: dict[str, list[str]] = {}
        for name, (section, key, _) in _SETTINGS.items():
            value = getattr(self, name)
            if name == "read_only" and read_only is not None:
                value = read_only
            if value is not None:
                sections.setdefault(section, []).append(f"{key} = {_toml_value(value)}")
        sections["topics"] = [f"{json.dumps(str(k))} = {json.dumps(str(v))}" for k, v in self.topics.items()]
        return "\n\n".join(f"[{section}]\n" + "\n".join(lines) for section, lines in sections.items()) + "\n"


# setting name -> (toml section, toml key, environment variable)
_SETTINGS: dict[str, tuple[str, str, str | None]] = {
    "raw_bucket": ("buckets", "raw", "RUNTOOL_RAW_BUCKET"),
    "ml_bucket": ("buckets", "ml", "RUNTOOL_ML_BUCKET"),
    "gcp_project": ("buckets", "project", "RUNTOOL_GCP_PROJECT"),
    "emulator_host": ("buckets", "emulator_host", "STORAGE_EMULATOR_HOST"),
    "data_dir": ("paths", "data_dir", "RUNTOOL_DATA_DIR"),
    "raw_root": ("paths", "raw_root", "RUNTOOL_RAW_ROOT"),
    "processed_root": ("paths", "processed_root", "RUNTOOL_PROCESSED_ROOT"),
    "ml_root": ("paths", "ml_root", "RUNTOOL_ML_ROOT"),
    "cache_dir": ("paths", "cache_dir", "RUNTOOL_CACHE_DIR"),
    "expected_samples_per_bag": ("coverage", "expected_samples_per_bag", "RUNTOOL_EXPECTED_SAMPLES_PER_BAG"),
    "under_labelled_pct": ("coverage", "under_labelled_pct", "RUNTOOL_UNDER_LABELLED_PCT"),
    "list_workers": ("inventory", "list_workers", "RUNTOOL_LIST_WORKERS"),
    "request_retry_s": ("buckets", "request_retry_s", "RUNTOOL_REQUEST_RETRY_S"),
    "sliced_download_bytes": ("transfers", "sliced_above_bytes", "RUNTOOL_SLICED_ABOVE_BYTES"),
    "read_only": ("server", "read_only", "RUNTOOL_READ_ONLY"),
    "dask_scheduler": ("executor", "dask_scheduler", "RUNTOOL_DASK_SCHEDULER"),
    "serve_cull_idle_s": ("serve", "cull_idle_s", "RUNTOOL_SERVE_CULL_IDLE_S"),
    "serve_max_kernels": ("serve", "max_kernels", "RUNTOOL_SERVE_MAX_KERNELS"),
    "serve_pool_size": ("serve", "pool_size", "RUNTOOL_SERVE_POOL_SIZE"),
    "serve_preheat": ("serve", "preheat", "RUNTOOL_SERVE_PREHEAT"),
    "serve_allowed_hosts": ("serve", "allowed_hosts", "RUNTOOL_SERVE_ALLOWED_HOSTS"),
    "serve_token_file": ("serve", "token_file", "RUNTOOL_SERVE_TOKEN_FILE"),
    "max_label_bytes": ("limits", "max_label_bytes", "RUNTOOL_MAX_LABEL_BYTES"),
    "max_chunk_bytes": ("limits", "max_chunk_bytes", "RUNTOOL_MAX_CHUNK_BYTES"),
}
_DATA_SUBDIRS = {"raw_root": "raw", "processed_root": "processed", "ml_root": "ML", "cache_dir": "cache"}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = value.resolve()
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _convert(name: str, value: Any, origin: str, base: Path) -> Any:
    """Coerce one raw value to the setting's type, or raise ConfigError naming the setting."""
    kind = {f.name: f.type for f in fields(RuntoolConfig)}[name]
    try:
        if kind == "Path":
            path = Path(os.path.expanduser(str(value)))
            return path if path.is_absolute() else base / path
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        text = str(value).strip()
        optional = ("gcp_project", "emulator_host", "dask_scheduler", "serve_allowed_hosts", "serve_token_file")
        return text or None if name in optional else text
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {value!r} is not a valid {kind} for {name}") from exc


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> RuntoolConfig:
    """Load the configuration.

    The file is ``path``, else ``$RUNTOOL_CONFIG``, else ``./runtool.toml`` if it exists. Relative paths
    in the file are relative to the file; relative paths from the environment to the working directory.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = ["defaults"]
    explicit = path or (Path(env["RUNTOOL_CONFIG"]) if env.get("RUNTOOL_CONFIG") else None)
    file = explicit or Path("runtool.toml")
    if explicit is not None and not file.is_file():
        origin = "--config" if path is not None else "RUNTOOL_CONFIG"
        raise ConfigError(f"{origin}: the config file {file} does not exist")
    if file.is_file():
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        base = file.resolve().parent
        known = {(section, key) for section, key, _ in _SETTINGS.values()}
        for section, table in document.items():
            if section == "topics" and isinstance(table, dict):
                values["topics"] = {**DEFAULT_TOPICS, **{str(k): str(v) for k, v in table.items()}}
                continue
            if not isinstance(table, dict):
                raise ConfigError(f"{file}: [{section}] must be a table")
            for key in table:
                if (section, key) not in known:
                    raise ConfigError(f"{file}: unknown setting [{section}] {key}")
        for name, (section, key, _) in _SETTINGS.items():
            if key in document.get(section, {}):
                values[name] = _convert(name, document[section][key], f"{file} [{section}] {key}", base)
        sources.append(str(file))
    cwd = Path.cwd()
    for name, (_, _, variable) in _SETTINGS.items():
        if variable and env.get(variable, "") != "":
            values[name] = _convert(name, env[variable], variable, cwd)
            sources.append(variable)
    data_dir = Path(values.get("data_dir", cwd / "data"))
    values["data_dir"] = data_dir
    for name, sub in _DATA_SUBDIRS.items():
        values.setdefault(name, data_dir / sub)
    return RuntoolConfig(**values, source=" < ".join(sources))
