"""GPU health, judged from what the node printed: one finding per fault, each with the action it calls for and why."""
