"""Policies: data-collection policies, scripted experts, collection (learners arrive
with the closed-loop issue)."""
