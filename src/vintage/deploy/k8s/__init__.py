"""The kubernetes deploy target (``environments.<env>.target: kubernetes``): docs/kubernetes.md.

``settings`` (its keys of vintage.yaml), ``manifests`` (the objects, as plain dicts), ``cluster`` (the API
server through the official client), ``target`` (deploy, rollout watch, rollback, keys, status, stop).
"""
