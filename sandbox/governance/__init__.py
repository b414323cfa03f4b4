"""Governance procedures the policies require: registration (申请、受理、审查、公示、凭证发放),
the catalog operators browse, and grant applications (docs/governance.md).

Pure: the state machines (``registration_states``, ``application_states``), what each
reader sees of a registration (``registration_views``), the terms of an application
(``application_terms``).  Over the control plane: the procedures (``registrations``
with the kept file in ``registration_files``, ``applications``, ``catalog_view``), each
step recorded in its table and the audit trail (``acts``).
"""
