"""Experiment kinds beyond patching: each module registers its config model and runner task."""
