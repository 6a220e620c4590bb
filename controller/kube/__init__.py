"""The Kubernetes API source: connection (``client``), list-watch loops (``reflector``),
their caches (``store``) and the RouteConfigs built from them (``source``).

This package is the only code in the controller that talks to the Kubernetes API.
"""

from controller.kube.client import (
    CredentialError,
    ExecAuth,
    KubeConfigError,
    TokenFileAuth,
    connect,
    http_client,
    load_config,
)
from controller.kube.reflector import ApiStatusError, Backoff, Reflector, WatchOptions
from controller.kube.source import KINDS, Kind, KubeSource, check_namespace
from controller.kube.store import (
    Cache,
    Change,
    Key,
    SecretNames,
    annotated_secrets,
    referenced_secrets,
    snapshot,
)

__all__ = [
    "KINDS",
    "ApiStatusError",
    "Backoff",
    "Cache",
    "Change",
    "CredentialError",
    "ExecAuth",
    "Key",
    "Kind",
    "KubeConfigError",
    "KubeSource",
    "Reflector",
    "SecretNames",
    "TokenFileAuth",
    "WatchOptions",
    "annotated_secrets",
    "check_namespace",
    "connect",
    "http_client",
    "load_config",
    "referenced_secrets",
    "snapshot",
]
