"""``vintage dashboard``: a local web view of environments, pipeline runs, releases, approvals, the audit
trail and drift, rendered on the server (Starlette + Jinja2), with approve/reject behind an operator token.

Nothing here is imported by ``vintage --help``: the CLI imports :mod:`vintage.dashboard.app` only when the
command runs.
"""
