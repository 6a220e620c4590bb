"""The proxy: serves a RouteConfig over HTTP and HTTPS, forwarding to pod endpoints.

Per-request decisions (which route, which headers, which status) are plain functions in
their own modules, with no I/O, so they can be tested and reused on their own; only the
server modules touch sockets: ``server`` (the ``Proxy`` facade), ``accepting``, ``http1``,
``forwarding`` and ``passthrough``.
"""
