"""The customisation ladder: rungs, the run that climbs them, the decision, the run store."""
