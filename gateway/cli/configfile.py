"""The config file as every CLI command reads it: validated once, every problem printed as file:line, exit 2."""

from __future__ import annotations

import sys

from .. import config as config_mod


def load_config(path: str) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except config_mod.ConfigInvalid as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None
