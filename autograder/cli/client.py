"""`dlopt login URL`, `dlopt submit SLUG FILE [--wait]`, `dlopt status [SLUG]`: the student
client's commands (`dlopt_submit`, client/ in this repository: the standard-library-only
package students install from the course server's `/client`, as `dlopt-submit`), here under
the engine's command with the engine's settings (`DLOPT_CONFIG_DIR`, `DLOPT_SERVER`,
`DLOPT_TOKEN`: autograder/settings.py). `dlopt test` is the engine's own (commands.py).
"""

from __future__ import annotations

from autograder import settings
from dlopt_submit.api import Config
from dlopt_submit.cli import add_commands


def config() -> Config:
    current = settings.current()
    return Config(current.config_dir, current.server, current.token)


def register(sub) -> None:
    add_commands(sub, "dlopt", config, names=("login", "submit", "status"))
