"""The daemon: scheduler, job runner, signals, sd_notify, reload (see DESIGN.md, process model)."""
