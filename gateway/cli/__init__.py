"""The `ztgate` command."""
