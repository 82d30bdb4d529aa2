"""Lottery tickets: pruning proposals, weight inheritance into them, BatchNorm recalibration, the ticket search and
its diagnosis."""
