"""Networks built from genomes: the blocks and the builder."""
