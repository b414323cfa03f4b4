"""Authorization: Casbin model and policy, grants, decisions."""
