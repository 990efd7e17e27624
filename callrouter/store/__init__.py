"""PostgreSQL access in plain SQL, numbered migrations and the embedded server launcher."""
