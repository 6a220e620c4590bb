"""The deploy/ RBAC rules against every call the real controller makes: all allowed, none spare.

The controller follows the API server emulator with the options the Deployment gives it
(its namespace, the Lease name, the Service to publish), serves real traffic, leads, writes
Ingress statuses and posts an Event for a rejected Ingress. Then each recorded request is
checked against the ClusterRole and Role in deploy/ (``tests/rbac.py``): a call no rule
allows would be a 403 in a cluster; a grant no call used is a privilege held for nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from controller.kube.publisher import PublishOptions
from tests.kubeapi import KubeAPI
from tests.polling import wait_for
from tests.rbac import check_rbac, load_rules
from tests.test_kube_source import (
    backends,
    certificate_secret,
    fetch,
    ingress,
    plain_kubeconfig,
    running,
    site,
)

pytestmark = pytest.mark.e2e

pytest_plugins = ["tests.kubeapi.fixtures"]

NAMESPACE = "fastroute"  # deploy/00-namespace.yaml, where the Role applies
LOAD_BALANCER_IP = "203.0.113.10"


def _publish_service() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fastroute-controller", "namespace": NAMESPACE},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}},
    }


def test_deploy_rbac_allows_every_call_the_controller_makes_and_nothing_more(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    kubeapi.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    kubeapi.create(_publish_service())
    publish = PublishOptions(
        publish_service=f"{NAMESPACE}/fastroute-controller",
        election_id="fastroute-leader",  # deploy/40-deployment.yaml's --election-id
        namespace=NAMESPACE,
        pod_name="fastroute-controller-0",
    )

    async def scenario() -> None:
        async with backends("web") as ports:
            kubeapi.create(certificate_secret("site"))
            site(kubeapi, ports["web"], tls_secret_name="site-tls")
            # an Opaque Secret an annotation names: watched by name in its namespace
            kubeapi.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "htpasswd", "namespace": "default"},
                    "type": "Opaque",
                    "stringData": {"auth": "user:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="},
                }
            )
            guarded = ingress("/admin", name="admin", host="admin.example.com")
            guarded["metadata"]["annotations"] = {
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "nginx.ingress.kubernetes.io/auth-secret": "htpasswd",
            }
            kubeapi.create(guarded)
            rejected = ingress("no-leading-slash", name="broken", host="broken.example.com")
            kubeapi.create(rejected)
            config = plain_kubeconfig(kubeapi, tmp_path)
            async with running(config, ports, publish=publish) as run:
                assert (await fetch(run.listening.http_port)).status == 308  # TLS host: to HTTPS

                async def status_written() -> bool:
                    site_now = kubeapi.get("Ingress", "site", namespace="default") or {}
                    balancer = site_now.get("status", {}).get("loadBalancer", {})
                    return bool(balancer.get("ingress") == [{"ip": LOAD_BALANCER_IP}])

                async def event_posted() -> bool:
                    events = kubeapi.list("Event", namespace="default")
                    return any(e["involvedObject"]["name"] == "broken" for e in events)

                secrets = "/api/v1/namespaces/default/secrets"

                async def named_secret_listed() -> bool:
                    return kubeapi.count("list", secrets) >= 1

                await wait_for(named_secret_listed, "the named Secret is listed by name")
                await wait_for(status_written, "the leader publishes the Ingress status")
                await wait_for(event_posted, "an Event about the rejected Ingress")

    trio.run(scenario)
    report = check_rbac(kubeapi.requests, load_rules())
    assert not report.missing, report
    assert not report.unused, report
