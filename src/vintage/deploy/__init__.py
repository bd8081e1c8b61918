"""Deploy targets: where an environment's scoring server runs.

``local`` (the embedded default) runs ``vintage serve`` processes on 127.0.0.1; ``kubernetes`` comes later.
Targets are listed in :data:`TARGETS` and imported lazily.
"""

TARGETS = {"local": "vintage.deploy.local:LocalTarget"}
