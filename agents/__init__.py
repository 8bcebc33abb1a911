"""Policies and learners (arrive with the closed-loop issue)."""
