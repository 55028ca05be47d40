"""Intake, release and authoring: what turns notebooks into code and assignments into
releases, before and beside grading.

- `notebook.py`: a submission's code from a notebook or a .py file (intake), and the
  student version of a master notebook;
- `formats.py`: the notebook dialects (dlopt, nbgrader, otter) and the leak check;
- `importer.py`: an nbgrader or otter master made into an assignment folder;
- `scaffold.py`: `dlopt new`, a working assignment to fill in;
- `release.py`: `dlopt release` and `dlopt check` (masters full marks, stubs zero);
- `audit.py`: `dlopt audit`, mutation testing of a suite against its master.
"""
