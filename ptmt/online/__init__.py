"""The online phase: the tuning environment, the RL agent, guard rails and the hybrid tuning loop."""
