"""Connecting to the Kubernetes API: configuration, TLS and credentials, via lightkube.

``load_config`` finds the configuration as kubectl would: ``--kubeconfig PATH`` (and
``--context``), else the pod's service account (in-cluster), else ``$KUBECONFIG`` or
``~/.kube/config``. ``connect`` builds a ``lightkube.AsyncClient`` on it; its httpx client
runs natively under trio and is what the reflectors stream from (``http_client``).

Two of lightkube's (0.22) credential paths are replaced, because a controller runs for months:

- **exec plugins** (``aws eks get-token``, ``gke-gcloud-auth-plugin``, ...): lightkube runs
  them with ``asyncio.create_subprocess_exec``, which fails under trio, accepts only the
  v1alpha1/v1beta1 APIs, and ignores ``expirationTimestamp``. ``ExecAuth`` runs the plugin
  through anyio, speaks v1 too, and runs it again before the token expires or on a 401.
- **token files** (in-cluster service-account tokens, kubeconfig ``tokenFile``): the kubelet
  rotates the projected token (hourly by default). lightkube re-reads the file only after a
  401, which never comes while the API server still accepts the old token, so requests go
  on with a stale one (clusters extend old tokens' validity and audit that). ``TokenFileAuth``
  re-reads it every minute, as client-go does, and on a 401, in a worker thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from lightkube import AsyncClient, ConfigError, KubeConfig
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SERVICE_ACCOUNT, SingleConfig
from lightkube.config.models import User, UserExec

__all__ = [
    "CredentialError",
    "ExecAuth",
    "KubeConfigError",
    "TokenFileAuth",
    "connect",
    "http_client",
    "load_config",
]

DEFAULT_KUBECONFIG = Path("~/.kube/config")
TOKEN_REFRESH = 60.0  # seconds between re-reads of a token file (client-go's period)
EXPIRY_MARGIN = 10.0  # an exec token this close to expiry is renewed before use
EXEC_TIMEOUT = 60.0  # an exec plugin that takes longer has hung (it may want a terminal)
EXEC_APIS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)


class KubeConfigError(ValueError):
    """No usable configuration: the message says which file or source, and what is wrong."""


class CredentialError(Exception):
    """A credential could not be had (an exec plugin failed, a token file is missing).

    Raised from inside an HTTP request; the reflectors treat it like an unreachable server:
    they log it, back off and try again.
    """


def load_config(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    service_account: Path | None = None,
) -> SingleConfig:
    """The cluster, user and namespace to use, found as kubectl would find them.

    Args:
        kubeconfig: a kubeconfig file; None: in-cluster, else ``$KUBECONFIG`` (its first
            existing file) or ``~/.kube/config``.
        context: a context of the kubeconfig (default: its current context). Given without
            ``kubeconfig``, the default kubeconfig is used even inside a cluster.
        service_account: where the in-cluster token, CA and namespace are mounted (None:
            ``/var/run/secrets/kubernetes.io/serviceaccount``).

    Raises:
        KubeConfigError: the file is missing or malformed, the context unknown, ...
    """
    service_account = service_account or Path(SERVICE_ACCOUNT)
    try:
        if kubeconfig is not None:
            return _from_file(kubeconfig, context)
        in_cluster = (service_account / "token").is_file() and os.environ.get(
            "KUBERNETES_SERVICE_HOST"
        )
        if in_cluster and context is None:
            return _single(KubeConfig.from_service_account(service_account), None, "in-cluster")
        return _from_file(_default_kubeconfig(), context)
    except ConfigError as error:
        raise KubeConfigError(str(error)) from None


def _from_file(path: Path, context: str | None) -> SingleConfig:
    try:
        config = KubeConfig.from_file(path)
    except (OSError, ValueError, KeyError, TypeError) as error:  # YAML errors are ValueErrors
        raise KubeConfigError(f"cannot read kubeconfig {path}: {error}") from None
    return _single(config, context, f"kubeconfig {path}")


def _single(config: KubeConfig, context: str | None, where: str) -> SingleConfig:
    single = config.get(context)
    if single is None:  # only with a default, which is not given; for the type checker
        raise KubeConfigError(f"{where} has no current context")
    return single


def _default_kubeconfig() -> Path:
    """``$KUBECONFIG``'s first existing file (kubectl merges them; we take one), else
    ``~/.kube/config``."""
    listed = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    for path in listed:
        if path.expanduser().is_file():
            return path
    return listed[0] if listed else DEFAULT_KUBECONFIG


def connect(config: SingleConfig, *, timeout: float = 30.0, trust_env: bool = True) -> AsyncClient:
    """A lightkube AsyncClient for ``config``, with the credentials above and no pool limit.

    Its httpx client is replaced by one built from the same parameters (lightkube's
    ``ConnectionParams``) but with an unbounded connection pool: every watch holds a
    connection for minutes, and with a namespace list there are more watches than httpx's
    default 100 connections. (lightkube's own ``transport=`` cannot carry the limit: it
    deep-copies the transport, and an SSLContext cannot be copied.)

    Args:
        timeout: seconds for connecting and for each request that is not a watch.
        trust_env: honour ``HTTPS_PROXY``/``NO_PROXY`` as kubectl does.

    Raises:
        KubeConfigError: a CA or client certificate that cannot be loaded, an exec plugin
            of an unknown API version.
    """
    if config.user is None:  # lightkube needs a user, even one without credentials
        config = config._replace(user=User())
    try:
        client = AsyncClient(config, timeout=httpx.Timeout(timeout), trust_env=trust_env)
        params = ConnectionParams(timeout=httpx.Timeout(timeout), trust_env=trust_env).httpx_params(
            config
        )
    except (OSError, ValueError, ConfigError) as error:  # ssl.SSLError is an OSError
        raise KubeConfigError(
            f"cannot use the certificates of context {config.context_name!r}: {error}"
        ) from None
    params["auth"] = _auth(config) or params["auth"]
    params["limits"] = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    http = httpx.AsyncClient(**params)
    http_client(client)  # check that lightkube keeps its client where we expect it
    # lightkube annotates this attribute with the sync httpx client; it holds the async one
    client._client._client = http  # type: ignore[assignment]
    return client


def _auth(config: SingleConfig) -> httpx.Auth | None:
    """Our replacement for lightkube's auth, where it needs one; None keeps lightkube's."""
    user = config.user
    if user is None:
        return None
    if user.token_file is not None:
        return TokenFileAuth(Path(config.abs_file(user.token_file)))
    if user.token is None and user.exec is not None:
        return ExecAuth(user.exec, base=config.fname.parent if config.fname else None)
    return None


def http_client(client: AsyncClient) -> httpx.AsyncClient:
    """The httpx client inside a lightkube AsyncClient (this module is the only code that
    reaches into lightkube's internals).

    Raises:
        TypeError: this lightkube keeps it elsewhere (its internals changed).
    """
    inner = getattr(getattr(client, "_client", None), "_client", None)
    if not isinstance(inner, httpx.AsyncClient):
        raise TypeError("cannot find lightkube's httpx.AsyncClient: unsupported lightkube version")
    return inner


class _RenewedBearer(httpx.Auth):
    """A bearer token from ``token()``; after a 401, a fresh one and one more try."""

    async def token(self, *, stale: str | None = None) -> str:
        """The token to send; a new one if ``stale`` (just refused) is the current one."""
        raise NotImplementedError

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self.token(stale=token)
            if fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError(f"{type(self).__name__} works with httpx.AsyncClient only")


class TokenFileAuth(_RenewedBearer):
    """A bearer token read from a file, re-read every ``refresh`` seconds and after a 401."""

    def __init__(
        self,
        path: Path,
        *,
        refresh: float = TOKEN_REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.refresh = refresh
        self._clock = clock
        self._token: str | None = None
        self._read_at = -float("inf")
        self._lock = anyio.Lock()

    async def token(self, *, stale: str | None = None) -> str:
        """The current token; re-read when due, or when ``stale`` (just refused) is cached."""
        async with self._lock:
            due = self._clock() - self._read_at >= self.refresh
            if self._token is None or due or self._token == stale:
                try:
                    text = await anyio.to_thread.run_sync(self.path.read_text)
                except OSError as error:
                    raise CredentialError(f"cannot read token file {self.path}: {error}") from None
                self._token = text.strip()
                self._read_at = self._clock()
            return self._token


class ExecAuth(_RenewedBearer):
    """Bearer tokens from a kubeconfig ``exec`` plugin, run through anyio.

    The plugin runs on the first request, again when its token is within
    ``EXPIRY_MARGIN`` seconds of its ``expirationTimestamp``, and after a 401. Concurrent
    requests wait for one run rather than starting their own.
    """

    def __init__(
        self,
        plugin: UserExec,
        *,
        base: Path | None = None,
        timeout: float = EXEC_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if plugin.apiVersion not in EXEC_APIS:
            raise KubeConfigError(
                f"exec plugin {plugin.command!r}: apiVersion {plugin.apiVersion!r} is not "
                f"one of {', '.join(EXEC_APIS)}"
            )
        self.plugin = plugin
        self.base = base
        self.timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._expires: float | None = None  # epoch seconds
        self._lock = anyio.Lock()
        self.runs = 0  # how many times the plugin ran

    def _command(self) -> list[str]:
        command = self.plugin.command
        # kubectl: a relative path with a separator is relative to the kubeconfig's folder
        if os.sep in command and not os.path.isabs(command) and self.base is not None:
            command = str(self.base / command)
        return [command, *(self.plugin.args or [])]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update((var.name, var.value) for var in self.plugin.env or [])
        info = {
            "apiVersion": self.plugin.apiVersion,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        return env

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token: the cached one, or a fresh one from the plugin."""
        async with self._lock:
            fresh_enough = self._expires is None or self._clock() < self._expires - EXPIRY_MARGIN
            if self._token is not None and fresh_enough and self._token != stale:
                return self._token
            self._token, self._expires = await self._run()
            return self._token

    async def _run(self) -> tuple[str, float | None]:
        command = self._command()
        self.runs += 1
        try:
            with anyio.fail_after(self.timeout):
                # no terminal: a plugin that would prompt reads end-of-file and fails
                result = await anyio.run_process(
                    command, stdin=subprocess.DEVNULL, env=self._env(), check=False
                )
        except TimeoutError:
            raise CredentialError(
                f"exec plugin {command[0]} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as error:
            hint = f" ({self.plugin.installHint.strip()})" if self.plugin.installHint else ""
            raise CredentialError(f"exec plugin {command[0]} cannot run: {error}{hint}") from None
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            raise CredentialError(
                f"exec plugin {command[0]} exited with {result.returncode}: {stderr}"
            )
        return _credential(command[0], result.stdout)


def _credential(plugin: str, output: bytes) -> tuple[str, float | None]:
    """The token and its expiry (epoch seconds, None: no expiry) from an ExecCredential."""
    try:
        credential: Any = json.loads(output)
        status = credential["status"]
    except (ValueError, KeyError, TypeError):
        raise CredentialError(f"exec plugin {plugin} did not print an ExecCredential") from None
    token = status.get("token") if isinstance(status, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialError(
            f"exec plugin {plugin} gave no token (client certificates from plugins are "
            "not supported)"
        )
    expiry = status.get("expirationTimestamp")
    if not expiry:
        return token, None
    try:
        return token, datetime.fromisoformat(str(expiry).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CredentialError(
            f"exec plugin {plugin}: unreadable expirationTimestamp {expiry!r}"
        ) from None
