"""The demo upstream app that `ztgate demo` runs behind the gateway (see upstream.create_app / upstream.serve)."""

from gateway.demo.upstream import UpstreamServer, create_app, serve

__all__ = ["UpstreamServer", "create_app", "serve"]
