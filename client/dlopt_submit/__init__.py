"""dlopt-submit: the student's command line for a dlopt course server.

`dlopt-submit login URL`, `submit SLUG FILE [--wait]`, `status [SLUG]`, `test NOTEBOOK`.
Standard library only, and nothing of the course inside: no hidden test, reference,
assignment master or grading engine. The course server serves the wheel at `/client`.
"""

__version__ = "0.1.0"
