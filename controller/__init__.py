"""The fastroute ingress controller: watches its sources and serves what they say.

Its first source is manifest files (``--manifests``): Ingresses, Services,
EndpointSlices and Secrets in YAML or JSON, reloaded when they change.
"""
