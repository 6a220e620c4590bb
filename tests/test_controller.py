"""The controller on manifest files: serves them, follows edits, survives a broken file.

A real controller (its HTTP and HTTPS listeners) runs on 127.0.0.1 with a real backend; the
test edits the manifest folder and polls the proxy, with a deadline, until it follows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from controller.app import Controller, Options
from controller.manifests import load_manifests
from tests.cli import run_controller
from tests.echo import Echo
from tests.polling import DEADLINE, wait_for
from tests.sites import site_objects

pytestmark = pytest.mark.e2e


async def _status(port: int, path: str) -> int:
    def call() -> int:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            url = f"http://127.0.0.1:{port}{path}"
            return client.get(url, headers={"host": "site.example.com"}).status_code

    return await trio.to_thread.run_sync(call)


async def _until(port: int, path: str, status: int) -> None:
    """Poll until ``path`` answers ``status``; fail at the deadline."""

    async def answered() -> bool:
        return await _status(port, path) == status

    await wait_for(answered, f"{path} answering {status}", interval=0.05)


def test_the_controller_follows_manifest_edits_and_keeps_serving_through_a_broken_file(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            manifest = tmp_path / "site.yaml"
            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/old")))
            controller = Controller(
                Options(manifests=[tmp_path], bind="127.0.0.1", http_port=0, https_port=0)
            )
            listening = await nursery.start(controller.run)
            port = listening.http_port
            assert controller.proxy.ready
            assert await _status(port, "/old/page") == 200
            assert await _status(port, "/new/page") == 404

            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/new")))
            await _until(port, "/new/page", 200)
            assert await _status(port, "/old/page") == 404

            reloads = controller.reloads
            manifest.write_text("kind: Ingress\nspec: [broken\n")
            with trio.fail_after(DEADLINE):  # the watcher saw the broken file and kept the config
                while not any("not valid YAML" in e for e in _errors(controller)):
                    await trio.sleep(0.05)
            assert controller.reloads == reloads
            assert await _status(port, "/new/page") == 200

            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/again")))
            await _until(port, "/again/x", 200)
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_a_burst_of_reloads_builds_a_few_times_and_ends_on_the_latest_files(
    tmp_path: Path,
) -> None:
    """Reload requests that arrive while one runs fold into one more build (as nginx
    folds reload signals), and the last build reads the files as they are at the end."""

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            manifest = tmp_path / "site.yaml"
            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/v0")))
            controller = Controller(
                Options(
                    manifests=[tmp_path], bind="127.0.0.1", http_port=0, https_port=0, watch=False
                )
            )
            listening = await nursery.start(controller.run)
            before = controller.reloads
            async with trio.open_nursery() as burst:
                for version in range(1, 51):
                    manifest.write_text(
                        yaml.safe_dump_all(site_objects(backend_port, f"/v{version}"))
                    )
                    burst.start_soon(controller.reload)
                    await trio.lowlevel.checkpoint()
            builds = controller.reloads - before
            assert 1 <= builds <= 10, builds
            assert await _status(listening.http_port, "/v50/x") == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def _errors(controller: Controller) -> list[str]:
    return load_manifests(controller.options.manifests).errors


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "--manifests PATH is required"),
        (["--manifests", ".", "--max-body-size", "lots"], "not a size: 'lots'"),
        (["--manifests", ".", "--http-port", "70000"], "not a port"),
        (["--manifests", ".", "--header-timeout", "-1"], "must be a positive number"),
        (["--manifests", ".", "--min-body-rate", "slow"], "not a size: 'slow'"),
    ],
)
def test_the_command_line_names_what_is_wrong(arguments: list[str], message: str) -> None:
    result = run_controller(*arguments)
    assert result.returncode == 2
    assert message in result.stderr


def test_the_command_line_help_lists_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for flag in (
        "--manifests",
        "--http-port",
        "--https-port",
        "--ingress-class",
        "--max-body-size",
        "--min-body-rate",
    ):
        assert flag in result.stdout
