"""The operator's commands: `migrate`, `simulate`, `report` and `user create`."""
