"""Hostile and broken submissions for the autograder (see generate.py)."""
