"""Every console script declared in setup.cfg names a module and function that exist."""

import configparser
import importlib
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def console_scripts():
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return [tuple(part.strip() for part in line.split("=", 1)) for line in lines if line.strip()]


def test_console_scripts_import():
    scripts = console_scripts()
    assert scripts, "setup.cfg declares no console scripts"
    for name, target in scripts:
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
