"""The `nacsim` command line: a thin face over core and science."""
