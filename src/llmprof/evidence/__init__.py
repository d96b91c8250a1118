"""Evidence a reviewer can check: provenance of every artifact, and study archives that verify by rebuilding."""
