"""Permission management: the roles file, the ACL plan and its application, separation-of-duties checks.

- ``roles``: the roles file (``config/roles.yaml``) -> :class:`~pipeline.permissions.roles.Role` values.
- ``acls``: ACLs as plain values and the authorizer's evaluation rules.
- ``plan``: the diff between the file and the live broker (pure).
- ``invariants``: the separation-of-duties rules over the live ACLs (pure).
- ``broker``: the AdminClient adapter that reads and changes users and ACLs.
"""
