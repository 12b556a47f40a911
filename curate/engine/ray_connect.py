"""How `--engine ray` finds its cluster, decided explicitly and checked in seconds.

- No address: a private local Ray (`address="local"`), so a cluster left running on
  this machine (or a stale `ray_current_cluster` file) never changes the run.
- `auto`: join the cluster `ray start` recorded on this machine, with no resource
  arguments (Ray refuses them when joining).
- `HOST:PORT`: join that head's GCS. `ray://HOST:PORT` goes through Ray Client.

Before joining, one gRPC call to the head's GCS (`GetClusterId`, a few seconds at most)
tells an unreachable head and a refused token apart, so the user gets one message
instead of Ray's once-a-second `gcs_client` warnings for 10+ s. A token found in
`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token` is sent with the probe,
and Ray's token mode is turned on for this process (unless RAY_AUTH_MODE says otherwise).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 4.0
TOKEN_ADVICE = ("copy the head's ~/.ray/auth_token to this machine's ~/.ray/auth_token, "
                "or set RAY_AUTH_TOKEN (see `ray get-auth-token` on the head)")


@dataclass(frozen=True)
class Connection:
    """What `ray.init` is called with, and what the summary and manifest say."""

    mode: str  # "private" | "joined"
    init_address: str  # passed to ray.init
    gcs_address: str | None  # HOST:PORT probed before joining (None for private / ray://)
    token_source: str | None  # where the auth token came from, if one was used


def find_token() -> tuple[str | None, str | None]:
    """(token, where it came from): RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    candidates = []
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
    candidates.append(Path.home() / ".ray" / "auth_token")
    for path in candidates:
        try:
            token = path.read_text().strip()
        except OSError:
            continue
        if token:
            return token, str(path)
    return None, None


def resolve_address(address: str | None) -> Connection:
    """The connection plan for `--ray-address` (None: a private local instance)."""
    if not address or address == "local":
        return Connection("private", "local", None, None)
    if address.startswith("ray://"):
        return Connection("joined", address, None, None)
    if address == "auto":
        gcs = _recorded_cluster()
    else:
        gcs = address.split("://", 1)[-1]
    return Connection("joined", gcs, gcs, None)


def _recorded_cluster() -> str:
    """The head `ray start` recorded on this machine (RAY_TMPDIR aware), or a clear error."""
    from ray._private.utils import read_ray_address

    recorded = read_ray_address(os.environ.get("RAY_TMPDIR") and
                                os.path.join(os.environ["RAY_TMPDIR"], "ray"))
    if not recorded:
        raise ValueError("--ray-address auto: no Ray cluster was started on this machine "
                         "(`ray start --head` records one); leave --ray-address out to run "
                         "on a private local Ray, or give HOST:PORT")
    return recorded


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail at once on a HOST:PORT nothing listens on (ray.init would wait for minutes)."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r} is not HOST:PORT, auto or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"no Ray cluster at {address}: {exc} (start one with "
                         "`ray start --head`, or leave --ray-address out to run on a "
                         "private local Ray)") from exc


def probe_gcs(address: str, token: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One `GetClusterId` call: returns when the head accepts us, else a clear ValueError."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray without grpcio (curate's 'ray' extra installs it): ray.init decides
        return

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            # the message classes are made at import by protobuf's builder: no stubs
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                if token:
                    raise ValueError(f"the Ray cluster at {address} refused this machine's "
                                     f"auth token; {TOKEN_ADVICE}") from None
                raise ValueError(f"the Ray cluster at {address} uses token authentication "
                                 f"and no token was found here; {TOKEN_ADVICE}") from None
            raise ValueError(f"the Ray cluster at {address} did not answer "
                             f"({code.name}: {exc.details()}); is it running (`ray status`)?"
                             ) from None


def _use_token_mode() -> None:
    """Turn Ray's token mode on for this process when RAY_AUTH_MODE is unset: `ray.init`
    does so itself for 'auto' but not for HOST:PORT, and then joins without the token."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return  # the user's explicit choice
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray before token auth: nothing to turn on
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def prepare(address: str | None) -> Connection:
    """Resolve the address, then check that the head answers and accepts our token."""
    conn = resolve_address(address)
    if conn.gcs_address is None:
        return conn
    check_reachable(conn.gcs_address)
    token, source = find_token()
    probe_gcs(conn.gcs_address, token)
    if token:
        _use_token_mode()
    return Connection(conn.mode, conn.init_address, conn.gcs_address, source)
