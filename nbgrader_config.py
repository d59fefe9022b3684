"""nbgrader configuration for a course that uses these chapters as its source notebooks.

Copy this file into the root of your nbgrader course (the folder holding ``source/``), or merge its
lines into your own ``nbgrader_config.py``. The chapters mark their worked solutions to pen-and-paper
exercises with the cell tag ``solution`` (book/appendix_instructors.md). nbgrader does not know that
tag, so without this file ``nbgrader generate_assignment`` would hand those solutions to students.
Here nbconvert's ``TagRemovePreprocessor`` runs first, before nbgrader's own preprocessors, and drops
every cell tagged ``solution``; nbgrader then stubs the coding exercises and removes the hidden tests
as usual. tests/test_assignments.py runs ``generate_assignment`` and ``autograde`` with this file.
"""

from nbconvert.preprocessors import TagRemovePreprocessor
from nbgrader.converters import GenerateAssignment

c = get_config()  # noqa: F821 (nbgrader provides get_config when it reads this file)

nbgrader_defaults = GenerateAssignment.class_traits()["preprocessors"].make_dynamic_default()
c.GenerateAssignment.preprocessors = [TagRemovePreprocessor, *nbgrader_defaults]
c.TagRemovePreprocessor.enabled = True
c.TagRemovePreprocessor.remove_cell_tags = {"solution"}
