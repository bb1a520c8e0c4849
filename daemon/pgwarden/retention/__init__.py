"""What to keep: the pure retention planner, the prune that carries a plan out, and the
reconciliation of the catalog with the manifests in storage (pins, rebuild).  No psycopg."""
