"""The configuration of a ``mako-actors serve`` node: a TOML file, flags on top.

Example ``node.toml`` (relative paths are relative to the file)::

    store = "data/node/store"
    tenants = ["9900000002009"]
    inbox = "data/node/inbox"          # the gateway renames finished files in here
    outbox = "data/node/outbox"        # rendered EDIFACT for the gateway to pick up
    # done = "data/node/done"          # default: beside the inbox
    # rejected = "data/node/rejected"  # default: beside the inbox
    # master_data = "masterdata.json"  # MaLo -> {current, future, ...}; "bilanzkreise": {LF: [EIC]}
    http_host = "127.0.0.1"
    http_port = 9464                   # /healthz, /readyz, /metrics (0: any free port)
    accept_post = false                # POST /interchanges drops the body into the inbox
    poll_interval = 0.5
    deadline_grace = 5.0               # a Frist fires this many seconds after its due instant
    durability = "fsync"
    ray = false
    hosts = 2

Refused with ``InvalidArgument`` naming the setting, before anything is created: a tenant that
is not a 13-digit MP-ID, and inbox, outbox, done and rejected of which two are one directory
or one lies inside another (the node would take its own files in, or a gateway pick up its
done files), and a store that is a ``replay --workers N`` part or holds such parts (it would
decide without the processes of the other parts). ``serve`` also reads ``master_data`` before
it creates a folder or the store.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mako_actors._placement import check_not_replay_parts
from mako_actors._store_lock import check_directory_path
from mako_actors.errors import InvalidArgument
from mako_actors.ids import TenantId

#: ``--master-data``'s help (serve and replay): the keys ``replay.load_master_data`` reads.
MASTER_DATA_HELP = (
    "JSON: MaLo -> {current, future, future_start, measurement, in_operation_from, "
    "out_of_market_from, esv_from, quarter_hour_metering, eeg_kwkg, ausfallverguetung, tranche_of, "
    "tranche_percent, msb, ...}, \"bilanzkreise\": {LF: [EIC]}, \"complete\": true (it lists "
    "every MaLo: others get APERAK Z14) and \"tenant\": MP-ID (the NB it is of; needed with several "
    "tenants) (README, Batch re-processing)"
)
_PATHS = ("store", "inbox", "outbox", "done", "rejected", "master_data")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything a node needs; build with ``load_config`` or directly."""

    store: Path
    tenants: tuple[str, ...]
    inbox: Path
    outbox: Path
    done: Path | None = None
    rejected: Path | None = None
    master_data: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = 9464
    accept_post: bool = False
    max_post_bytes: int = 16 * 1024 * 1024
    poll_interval: float = 0.5
    #: Seconds a Frist waits past its due instant before it fires, for a file received (its
    #: mtime) by then that the gateway has not renamed into the inbox yet. A file already in
    #: the inbox holds back every Frist due at or after its receipt instant until it is ingested.
    deadline_grace: float = 5.0
    durability: str = "fsync"
    #: A test system: takes test interchanges (UNB 0035 = 1), and marks every interchange it
    #: sends a test one, answers to production traffic included (DOMAIN §4: test traffic never
    #: enters production processes, neither ours nor a partner's).
    accept_test: bool = False
    ray: bool = False
    ray_address: str | None = None
    hosts: int = 2
    node: str = "node"
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tenants:
            raise InvalidArgument("serve: at least one tenant MP-ID is needed (tenants = [...] or --tenant)")
        for tenant in self.tenants:
            try:
                TenantId.from_party_id(tenant)  # the check the replay makes
            except InvalidArgument:
                raise InvalidArgument(
                    f"serve: tenants: {tenant!r} is not an MP-ID (13 digits, e.g. 9900000002009)"
                ) from None
        self._check_folders()
        check_not_replay_parts(self.store, "serve")
        if self.poll_interval <= 0:
            raise InvalidArgument(f"serve: poll_interval must be > 0, got {self.poll_interval}")
        if not 0 <= self.deadline_grace <= 3600:
            raise InvalidArgument(
                f"serve: deadline_grace must be 0 to 3600 seconds, got {self.deadline_grace}"
            )
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise InvalidArgument(f"serve: http_port {self.http_port} is not a port")
        if self.durability not in ("fsync", "no_meta_sync", "no_sync"):
            raise InvalidArgument(
                f"serve: durability must be fsync, no_meta_sync or no_sync, not {self.durability!r}"
            )

    def _check_folders(self) -> None:
        """``InvalidArgument`` if two of store, inbox, outbox, done, rejected are one folder or
        nested, or one of them cannot be a directory (``_store_lock.check_directory_path``).

        The outbox or done/ as the inbox would feed the node its own files forever; one inside
        another mixes what a gateway picks up; the store as (or inside) a folder the node moves
        files out of would have its own database moved to rejected/. Paths are compared
        resolved (symlinks, ``..``).
        """
        folders = [
            ("store", self.store), ("inbox", self.inbox), ("outbox", self.outbox), ("done", self.done_dir),
            ("rejected", self.rejected_dir),
        ]  # fmt: skip
        resolved = [(name, path, path.resolve()) for name, path in folders]
        for i, (name, path, real) in enumerate(resolved):
            for other, other_path, other_real in resolved[i + 1 :]:
                if real == other_real:
                    raise InvalidArgument(
                        f"serve: {name} and {other} are the same directory ({path}); they must be apart"
                    )
                if real.is_relative_to(other_real):
                    inside = f"{name} ({path}) lies inside {other} ({other_path})"
                elif other_real.is_relative_to(real):
                    inside = f"{other} ({other_path}) lies inside {name} ({path})"
                else:
                    continue
                raise InvalidArgument(
                    f"serve: {inside}; store, inbox, outbox, done and rejected must be apart"
                )
        for name, path in folders:
            check_directory_path("serve", name, path)

    @property
    def done_dir(self) -> Path:
        return self.done or self.inbox.parent / "done"

    @property
    def rejected_dir(self) -> Path:
        return self.rejected or self.inbox.parent / "rejected"


def load_config(path: Path | None = None, **overrides: Any) -> ServeConfig:
    """The config of the TOML file at ``path`` (if any) with ``overrides`` (flags) on top.

    ``None`` overrides are ignored. Unknown keys, missing required ones and values of the wrong
    type raise ``InvalidArgument`` naming them.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise InvalidArgument(f"serve: cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"serve: config {path} is not valid TOML: {exc}") from None
        for key in _PATHS:
            if isinstance(raw.get(key), str):
                raw[key] = str((path.parent / raw[key]).resolve())
        values.update(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidArgument(
            f"serve: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    missing = [k for k in ("store", "tenants", "inbox", "outbox") if not values.get(k)]
    if missing:
        raise InvalidArgument(
            f"serve: missing setting(s) {', '.join(missing)} (in the config file or as flags)"
        )
    try:
        for key in _PATHS:
            if values.get(key) is not None:
                values[key] = Path(values[key])
        if isinstance(values["tenants"], str):
            values["tenants"] = (values["tenants"],)
        values["tenants"] = tuple(str(t) for t in values["tenants"])
        for key in ("http_port", "hosts", "max_post_bytes"):
            if values.get(key) is not None:
                value = values[key]
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise InvalidArgument(f"serve: {key} must be a whole number, not {value!r}")
                values[key] = int(value)
        for key in ("poll_interval", "deadline_grace"):
            if values.get(key) is not None:
                values[key] = float(values[key])
        for key in ("accept_post", "accept_test", "ray"):
            if key in values and not isinstance(values[key], bool):
                raise InvalidArgument(f"serve: {key} must be true or false, not {values[key]!r}")
        if "labels" in values:
            values["labels"] = {str(k): str(v) for k, v in dict(values["labels"]).items()}
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument(f"serve: bad setting: {exc}") from None
    return ServeConfig(**values)
