"""Reading Kubernetes objects from manifest files and folders.

A folder means the ``.yaml``, ``.yml`` and ``.json`` files in it, in name order
(``kubectl apply -f folder`` does the same), and a file may hold several documents.
A file that does not parse is reported with its name and the position of the error, and
the caller decides what to keep: the controller keeps serving its last good config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MANIFEST_SUFFIXES", "Loaded", "load_manifests", "manifest_files"]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Loaded:
    """The objects read, and the files that could not be (with why)."""

    objects: list[Mapping[str, Any]]
    errors: list[str]

    @property
    def complete(self) -> bool:
        return not self.errors


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The files the paths name: files as given, folders' manifests in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()
            )
        else:
            files.append(path)
    return files


def _documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def load_manifests(paths: Iterable[Path]) -> Loaded:
    """Every object in the files and folders; ``List`` objects are unpacked."""
    objects: list[Mapping[str, Any]] = []
    errors: list[str] = []
    for path in manifest_files(paths):
        try:
            documents = _documents(path)
        except FileNotFoundError:
            errors.append(f"{path}: no such file")
            continue
        except (OSError, UnicodeDecodeError) as error:
            errors.append(f"{path}: cannot be read: {error}")
            continue
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            errors.append(f"{path}:{where}: not valid YAML: {problem}")
            continue
        for document in documents:
            if isinstance(document, Mapping) and document.get("kind") == "List":
                objects += [
                    item for item in document.get("items") or [] if isinstance(item, Mapping)
                ]
            elif isinstance(document, Mapping):
                objects.append(document)
            else:
                errors.append(f"{path}: a document is a {type(document).__name__}, not an object")
    return Loaded(objects, errors)
