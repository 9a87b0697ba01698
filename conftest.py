"""pytest's configuration for the whole repository (the unit tests and the notebooks' nbmake run)."""

from course_utils.cli.results import patch_nbclient

# nbmake executes notebooks with nbclient, which can wait out a cell's whole timeout after a widget cell
# (jupyter/nbclient#312): poll in one-second slices instead, as make results does.
patch_nbclient()
