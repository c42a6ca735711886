"""The run configuration: the typed schema (`schema`), strict YAML/JSON parsing (`parse`) and named recipes
(`recipes`). `from maskgan.config import RunConfig` is the one way in: this package hands the schema's names on."""

from maskgan.config.parse import ConfigError, read_yaml  # noqa: F401
from maskgan.config.schema import *  # noqa: F401,F403
