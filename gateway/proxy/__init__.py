"""The embedded mitmproxy: master, the ztgate addon, and the registry of live connections."""
