"""reinforcement-loop: watch a deployed classifier's accuracy and fine-tune it when it degrades."""
