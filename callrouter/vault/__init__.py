"""Recording encryption at rest: key ring, envelope encryption, streaming AEAD files."""
