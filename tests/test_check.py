"""``fastroute-controller check``: the migration report a user runs in CI before moving.

Run as a user types it (``python -m controller check ...``), on the example manifests and
on crafted ones: each annotation and ConfigMap key gets its catalogue status, rejected
values are reported, the exit status says whether everything carries over, and
``--output json`` parses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastroute.ingress.catalogue import ANNOTATIONS, CONFIGMAP_KEYS
from tests.cli import run_controller
from tests.kubeapi import KubeAPI

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NGINX = "nginx.ingress.kubernetes.io/"

pytest_plugins = ["tests.kubeapi.fixtures"]


def _ingress(name: str, annotations: dict[str, str], path: str = "/") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": f"{name}.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def _configmap(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
        "data": data,
    }


def _write(folder: Path, *objects: dict[str, Any]) -> Path:
    path = folder / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def _json(*arguments: str) -> tuple[int, dict[str, Any]]:
    done = run_controller("check", *arguments, "--output", "json")
    return done.returncode, json.loads(done.stdout)


def _statuses(report: dict[str, Any], ingress: str) -> dict[str, str]:
    (found,) = [i for i in report["ingresses"] if i["name"] == ingress]
    return {a["key"]: a["status"] for a in found["annotations"]}


def test_the_examples_carry_over_and_say_which_annotations_they_use() -> None:
    done = run_controller("check", "-f", str(EXAMPLES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ingress default/ingress-example" in done.stdout
    rewrite = next(line for line in done.stdout.splitlines() if "rewrite-target" in line)
    assert "honoured" in rewrite
    code, report = _json("-f", str(EXAMPLES))
    assert code == 0
    assert report["exit_code"] == 0
    names = {i["name"] for i in report["ingresses"]}
    assert {"default/ingress-example", "default/sample-ingress-by-nginx"} <= names
    assert _statuses(report, "default/sample-ingress-by-nginx") == {
        NGINX + "ssl-redirect": "honoured"
    }


def test_statuses_and_notes_come_from_the_catalogue_under_both_prefixes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _ingress(
            "api",
            {
                NGINX + "proxy-body-size": "8m",
                NGINX + "proxy-buffering": "on",
                "fastroute.io/canary-weight": "10",
                NGINX + "limit-allowlist": "10.0.0.0/8",
                NGINX + "auth-kerberos": "on",
                NGINX + "configuration-snippet": "more_set_headers 'X: y';",
                NGINX + "no-such-annotation": "1",
                "example.com/owner": "team-a",
            },
        ),
    )
    code, report = _json("-f", str(path))
    assert code == 1
    assert _statuses(report, "shop/api") == {
        NGINX + "proxy-body-size": "honoured",
        NGINX + "proxy-buffering": "accepted",
        "fastroute.io/canary-weight": "honoured",
        NGINX + "limit-allowlist": "planned",
        NGINX + "auth-kerberos": "unknown",
        NGINX + "configuration-snippet": "unsupported",
        NGINX + "no-such-annotation": "unknown",
    }
    (ingress,) = report["ingresses"]
    by_key = {a["key"]: a for a in ingress["annotations"]}
    assert by_key[NGINX + "limit-allowlist"]["planned_in"] == "later"
    assert by_key[NGINX + "proxy-buffering"]["note"] == ANNOTATIONS["proxy-buffering"].note
    assert by_key[NGINX + "proxy-body-size"]["value"] == "8m"
    # the builder's "not implemented" warnings are said by the statuses, not repeated; what
    # it refuses is: an auth annotation it does not know fails closed (503), not open
    refused = [p for p in ingress["problems"] if "annotations[" in p["field"]]
    assert [p["field"] for p in refused] == [f"metadata.annotations[{NGINX}auth-kerberos]"]
    assert "503" in refused[0]["reason"]


def test_only_honoured_and_accepted_annotations_exit_0(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _ingress("web", {NGINX + "ssl-redirect": "false", NGINX + "proxy-buffering": "on"}),
        _ingress("plain", {}),
    )
    done = run_controller("check", "-f", str(path))
    assert done.returncode == 0, done.stdout
    assert "Ingress shop/web" in done.stdout
    assert "Ingress shop/plain" in done.stdout


def test_a_rejected_value_is_reported_and_exits_1(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _ingress("bad", {NGINX + "ssl-redirect": "maybe"}),
        _ingress("good", {NGINX + "ssl-redirect": "false"}),
    )
    code, report = _json("-f", str(path))
    assert code == 1
    bad = next(i for i in report["ingresses"] if i["name"] == "shop/bad")
    (problem,) = bad["problems"]
    assert problem["severity"] == "rejected"
    assert problem["field"] == f"metadata.annotations[{NGINX}ssl-redirect]"
    assert "maybe" in problem["reason"]
    good = next(i for i in report["ingresses"] if i["name"] == "shop/good")
    assert good["problems"] == []
    table = run_controller("check", "-f", str(path)).stdout
    assert "rejected:" in table
    assert "'maybe'" in table


def test_a_rule_fastroute_cannot_use_exits_1(tmp_path: Path) -> None:
    path = _write(tmp_path, _ingress("rel", {}, path="relative"))
    code, report = _json("-f", str(path))
    assert code == 1
    (ingress,) = report["ingresses"]
    assert [p["severity"] for p in ingress["problems"]] == ["rejected"]


def test_configmap_keys_get_their_statuses(tmp_path: Path) -> None:
    data = {"proxy-body-size": "16m", "use-gzip": "true", "no-such-key": "1"}
    path = _write(tmp_path, _ingress("web", {}), _configmap(data))
    code, report = _json("-f", str(path), "--configmap", "ingress-nginx/ingress-nginx-controller")
    assert code == 1
    configmap = report["configmap"]
    assert configmap["name"] == "ingress-nginx/ingress-nginx-controller"
    statuses = {k["key"]: k["status"] for k in configmap["keys"]}
    assert statuses == {
        "proxy-body-size": "honoured",
        "use-gzip": "unsupported",
        "no-such-key": "unknown",
    }
    notes = {k["key"]: k["note"] for k in configmap["keys"]}
    assert notes["use-gzip"] == CONFIGMAP_KEYS["use-gzip"].note


def test_a_configmap_of_honoured_and_accepted_keys_exits_0(tmp_path: Path) -> None:
    data = {"proxy-body-size": "16m", "proxy-buffering": "off", "hsts": "false"}
    path = _write(tmp_path, _configmap(data))
    done = run_controller(
        "check", "-f", str(path), "--configmap", "ingress-nginx/ingress-nginx-controller"
    )
    assert done.returncode == 0, done.stdout
    assert "ConfigMap ingress-nginx/ingress-nginx-controller" in done.stdout
    assert "proxy-buffering: off" in done.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, _ingress("web", {}))
    missing = run_controller("check", "-f", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert "absent.yaml" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [\n")
    assert run_controller("check", "-f", str(broken)).returncode == 2
    no_configmap = run_controller("check", "-f", str(path), "--configmap", "ingress-nginx/none")
    assert no_configmap.returncode == 2
    assert "ingress-nginx/none" in no_configmap.stderr
    assert run_controller("check", "-f", str(path), "--configmap", "nameonly").returncode == 2
    assert run_controller("check", "-f", str(path), "--output", "xml").returncode == 2
    both = run_controller("check", "-f", str(path), "--context", "prod")
    assert both.returncode == 2
    assert "--context" in both.stderr


def test_the_cluster_is_checked_through_the_api(kubeapi: KubeAPI, tmp_path: Path) -> None:
    kubeapi.create(
        _ingress("api", {NGINX + "limit-rps": "5", NGINX + "limit-allowlist": "10.0.0.0/8"})
    )
    kubeconfig = kubeapi.write_kubeconfig(tmp_path / "kubeconfig")
    code, report = _json("--kubeconfig", str(kubeconfig), "--timeout", "20")
    assert code == 1
    assert _statuses(report, "shop/api") == {
        NGINX + "limit-rps": "honoured",
        NGINX + "limit-allowlist": "planned",
    }


def test_a_cluster_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    with KubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    done = run_controller("check", "--kubeconfig", str(kubeconfig), "--timeout", "1")
    assert done.returncode == 2
    assert "did not list" in done.stderr


def test_a_configmap_value_fastroute_rejects_is_reported_and_fails_the_check(
    tmp_path: Path,
) -> None:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "controller", "namespace": "ingress-nginx"},
        "data": {"proxy-body-size": "8 megs", "hsts": "true"},
    }
    path = _write(tmp_path, _ingress("web", {}), configmap)
    code, report = _json("-f", str(path), "--configmap", "ingress-nginx/controller")
    assert code == 1
    (problem,) = report["configmap"]["problems"]
    assert problem["field"] == "data[proxy-body-size]"
    assert problem["severity"] == "rejected"
    assert "8 megs" in problem["reason"]
    fixed = dict(configmap, data={"proxy-body-size": "8m", "hsts": "true"})
    path = _write(tmp_path, _ingress("web", {}), fixed)
    code, report = _json("-f", str(path), "--configmap", "ingress-nginx/controller")
    assert (code, report["configmap"]["problems"]) == (0, [])


def test_ssl_passthrough_is_checked_as_the_controller_will_run(tmp_path: Path) -> None:
    """Without --enable-ssl-passthrough the controller ignores the annotation, and check
    warns so; with the flag, as the migrating cluster's controller ran, it does not."""
    manifest = _write(tmp_path, _ingress("vault", {NGINX + "ssl-passthrough": "true"}))
    warning = "ssl-passthrough ignored: the controller runs without --enable-ssl-passthrough"
    without = run_controller("check", "-f", str(manifest))
    assert warning in without.stdout
    with_flag = run_controller("check", "-f", str(manifest), "--enable-ssl-passthrough")
    assert with_flag.returncode == 0, with_flag.stdout
    assert "ssl-passthrough: true  honoured" in with_flag.stdout
    assert warning not in with_flag.stdout
