"""The faults suite (issue 16): the whole daemon attacked at once, repeatedly, with real processes,
real servers and real file systems; every random choice derives from a seed printed on failure."""
