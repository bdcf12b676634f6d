"""One restart, run step by step: the runner (the step loop) and its phases."""
