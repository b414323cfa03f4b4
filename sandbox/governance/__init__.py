"""Governance procedures the policies require: registration (申请、受理、审查、公示、凭证发放),
the catalog operators browse, and grant applications (docs/governance.md).

The state machines are pure (``registration_states``, ``application_states``); the
procedures over the control plane (``registrations``, ``applications``,
``catalog_view``) record every step in their tables and the audit trail.
"""
