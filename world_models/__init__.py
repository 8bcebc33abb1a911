"""World models and ImaginedEnv (arrive with the world-model issue)."""
