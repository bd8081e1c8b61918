"""Secrets: scoped, encrypted, per-environment, never printed.

- :mod:`vintage.secrets.names` — scope/key names, environment binding, ``${secret:scope/key}`` references;
- :mod:`vintage.secrets.local` — the encrypted local store (the embedded default);
- :mod:`vintage.secrets.env` — read-only ``VINTAGE_SECRET__<SCOPE>__<KEY>`` variables (CI);
- :mod:`vintage.secrets.databricks` — Databricks secret scopes through databricks-sdk;
- :mod:`vintage.secrets.access` — :class:`SecretReader`: environment checks, audit, redaction.

Importing this package is cheap (no cryptography, no SDK): submodules import what they need.
"""
