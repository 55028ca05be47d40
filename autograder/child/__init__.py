"""What runs inside the sandbox: loads the student's code and answers the judge's calls.

Imports only `autograder.protocol` and torch: never the judge, references or server.
"""
