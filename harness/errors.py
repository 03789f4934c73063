"""The harness's exceptions: one root, each class also the builtin it means.

    HarnessError
    ├── ConfigError(ValueError)          a file the user wrote is wrong
    │   ├── ScenarioError                 scenario YAML: names file, line, key, and the fix
    │   └── ProfileError                  simulator profile YAML: the same
    ├── MissingEnvError(KeyError)        a ``${VAR}`` the scenario names is not set
    ├── SafetyError(PermissionError)     a target off loopback without opt-in, or a cap breach
    ├── ResultsError(FileNotFoundError)  a run folder that is missing or incomplete
    └── SimulatorStartError(RuntimeError) the simulator subprocess did not come up

Per-order failures at a supplier are never exceptions: they are rows in the event log.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class ConfigError(HarnessError, ValueError):
    """A configuration file is invalid; the message names the file, line and key."""

    schema_command = "trialbench schema"
    """The command that prints the JSON Schema of this kind of file (named in hints)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
            where += ": "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


class ScenarioError(ConfigError):
    """A scenario file is invalid."""


class ProfileError(ConfigError):
    """A simulator behaviour-profile file is invalid."""

    schema_command = "trialbench schema --kind fleet"


class MissingEnvError(HarnessError, KeyError):
    """A ``${VAR}`` reference names an environment variable that is not set."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SafetyError(HarnessError, PermissionError):
    """A run would reach a non-loopback target without opt-in, or exceed its spending cap."""


class ResultsError(HarnessError, FileNotFoundError):
    """A run folder is missing or lacks what the caller needs."""


class SimulatorStartError(HarnessError, RuntimeError):
    """The simulator subprocess exited or never printed its URL."""
