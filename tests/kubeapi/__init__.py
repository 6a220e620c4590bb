"""A Kubernetes API server emulator for tests: the real REST wire protocol, in-process.

kubectl and lightkube work against it unchanged (discovery, CRUD, status subresources,
paginated lists, watches with bookmarks and 410 Gone, bearer tokens and client certificates),
and tests drive it through hooks: create or change objects without HTTP, expire history,
drop watches, stop and restart the server, forbid verbs, rotate tokens, and read what the
client did. See ``KubeAPI`` for the Python API and ``kubeapi.fixtures`` for pytest fixtures.
"""

from .api import TEST_TOKEN, KubeAPI, WriteCall
from .pki import PKI, Credentials
from .resources import RESOURCES, ResourceType, find_resource
from .status import ApiError

__all__ = [
    "PKI",
    "RESOURCES",
    "TEST_TOKEN",
    "ApiError",
    "Credentials",
    "KubeAPI",
    "ResourceType",
    "WriteCall",
    "find_resource",
]
