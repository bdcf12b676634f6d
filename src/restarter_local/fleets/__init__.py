"""Fleet files shipped with restarter (`default.yaml` is what `restarter serve` starts with)."""
