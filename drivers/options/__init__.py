"""Per-point options that the agent's stages read (energy, alarms, report by exception).

They live here, at the ground, so every driver's point model can carry them as plain
config without importing the runtime; only edge_agent/ acts on them.
"""
