"""Privacy rights: erasure, access export, suppression, retention and audit."""
