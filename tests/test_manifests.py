"""Reading manifests: files, folders, several documents, Lists, and files that do not parse."""

from __future__ import annotations

from pathlib import Path

from controller.manifests import load_manifests, manifest_files

SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n"


def test_a_folder_means_its_manifests_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(SERVICE.format(name="b"))
    (tmp_path / "a.yml").write_text(SERVICE.format(name="a") + "---\n" + SERVICE.format(name="a2"))
    (tmp_path / "c.json").write_text('{"kind": "Service", "metadata": {"name": "c"}}')
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(SERVICE.format(name="d"))
    loaded = load_manifests([tmp_path])
    assert loaded.complete
    assert [o["metadata"]["name"] for o in loaded.objects] == ["a", "a2", "b", "c"]
    assert [p.name for p in manifest_files([tmp_path])] == ["a.yml", "b.yaml", "c.json"]


def test_list_objects_are_unpacked_and_empty_documents_skipped(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text(
        "---\n---\napiVersion: v1\nkind: List\nitems:\n"
        "- {kind: Service, metadata: {name: x}}\n- {kind: Service, metadata: {name: y}}\n"
    )
    assert [o["metadata"]["name"] for o in load_manifests([listing]).objects] == ["x", "y"]


def test_a_file_that_does_not_parse_is_named_with_the_place(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SERVICE.format(name="ok"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata: {name: [unclosed\n")
    loaded = load_manifests([tmp_path])
    assert not loaded.complete
    [error] = loaded.errors
    assert str(broken) in error
    assert "line " in error
    assert "not valid YAML" in error
    assert [o["metadata"]["name"] for o in loaded.objects] == ["ok"]


def test_missing_files_and_non_object_documents_are_reported(tmp_path: Path) -> None:
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    loaded = load_manifests([tmp_path / "gone.yaml", scalar])
    assert any("gone.yaml: no such file" in e for e in loaded.errors)
    assert any("scalar.yaml: a document is a str" in e for e in loaded.errors)
