"""The control plane under /.ztgate/: login, logout, MFA, OIDC callback, sensor ingest, admin API, JWKS, health."""
