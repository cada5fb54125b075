"""Load config.yaml into frozen dataclasses and validate every key before any job is touched.

Usage::

    from persistentq.config import config_from_dict, load_config

    config = load_config("config.yaml")  # load_config() reads ./config.yaml if present, else defaults
    config.consumer.n_tries              # 3
    fast = config.replace(**{"consumer.interval_min": 0, "consumer.interval_max": 0})
    notebook = config_from_dict({"consumer": {"n_time": 5}})

Every key is optional. Each invalid value raises ConfigError with a one-line message
that names the file, the key as `section.key`, the value, what is expected and the fix.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import reprlib
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from persistentq.errors import ConfigError

DEFAULT_CONFIG_NAME = "config.yaml"

# Environment variables that override a key, so secrets can stay out of the file.
# A variable that is unset or empty leaves the key as the file sets it.
_ENV_OVERRIDES = {
    "PERSISTENTQ_DATABASE": ("general", "database"),
    "PERSISTENTQ_WEB_TOKEN": ("web", "token"),
}

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class _Rule:
    """The type and the allowed values of one config key."""

    kind: type  # int, float, str or Path. A float key also accepts an int.
    low: int | None = None  # inclusive minimum
    above: int | None = None  # exclusive minimum
    high: int | None = None  # inclusive maximum
    unit: str = ""
    choices: tuple[str, ...] = ()
    nonempty: bool = False
    import_path: bool = False  # empty, or "module.path:function_name"
    secret: bool = False  # error messages show the type, never the value

    def describe(self) -> str:
        """Return what the key expects, as in "an integer >= 1"."""
        if self.choices:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        if self.import_path:
            return "empty or 'module.path:function_name'"
        if self.kind is Path:
            return "a non-empty path"
        if self.kind is str:
            return "a non-empty string" if self.nonempty else "a string"
        noun = "an integer" if self.kind is int else "a number"
        if self.unit:
            noun = f"{noun} of {self.unit}"
        return f"{noun} {self._describe_range()}".rstrip()

    def _describe_range(self) -> str:
        if self.low is not None and self.high is not None:
            return f"from {self.low} to {self.high}"
        bounds = []
        if self.above is not None:
            bounds.append(f"> {self.above}")
        if self.low is not None:
            bounds.append(f">= {self.low}")
        if self.high is not None:
            bounds.append(f"<= {self.high}")
        return " and ".join(bounds)


# Upper bounds for keys without a tighter one, so that every count and duration
# stays far inside SQLite's 64-bit INTEGER range.
_MAX_COUNT = 1_000_000_000
_MAX_SECONDS = 1_000_000_000  # about 31.7 years

_SECONDS_POSITIVE = _Rule(float, above=0, high=_MAX_SECONDS, unit="seconds")
_SECONDS = _Rule(float, low=0, high=_MAX_SECONDS, unit="seconds")
_COUNT = _Rule(int, low=0, high=_MAX_COUNT)
_FUNCTION = _Rule(str, import_path=True)
_NONEMPTY_STRING = _Rule(str, nonempty=True)

# Section name -> key -> rule. The dataclasses below define the defaults.
_RULES: dict[str, dict[str, _Rule]] = {
    "consumer": {
        "n_time": _SECONDS_POSITIVE,
        "n_tries": _Rule(int, low=1, high=_MAX_COUNT),
        "interval_min": _SECONDS,
        "interval_max": _SECONDS,
        "poll_interval": _SECONDS_POSITIVE,
        "lease": _SECONDS_POSITIVE,
        "retry_backoff": _SECONDS,
        "function": _FUNCTION,
        "sync_mode": _Rule(str, choices=("process", "thread")),
        "failure_rate": _Rule(float, low=0, high=1),
    },
    "producer": {"interval": _SECONDS, "max_queued": _COUNT, "function": _FUNCTION},
    "cleaner": {"interval": _SECONDS_POSITIVE, "retention": _SECONDS},
    "general": {
        "primary_path": _Rule(Path, nonempty=True),
        "n_prod": _COUNT,
        "n_cons": _COUNT,
        "queue": _NONEMPTY_STRING,
        "database": _NONEMPTY_STRING,
        "synchronous": _Rule(str, choices=("normal", "full")),
        "shutdown_grace": _SECONDS,
    },
    "web": {
        "host": _NONEMPTY_STRING,
        "port": _Rule(int, low=1, high=65535),
        "token": _Rule(str, secret=True),
    },
}


@dataclass(frozen=True)
class ConsumerConfig:
    """Consumer settings. Durations are in seconds."""

    n_time: float = 3600  # seconds one attempt may take
    n_tries: int = 3  # attempts in all, the first included, before a job fails
    interval_min: float = 7  # seconds to wait after each job, drawn at random
    interval_max: float = 15
    poll_interval: float = 1  # seconds between looks at an empty queue without a wake-up
    lease: float = 30  # seconds a claim leases a job for, renewed while it runs
    retry_backoff: float = 1  # seconds before the first retry, doubled each time, with jitter
    function: str = ""  # module:function, or empty to run the file pipeline
    sync_mode: str = "process"  # process (n_time enforced) or thread
    failure_rate: float = 0.0  # share of attempts the demo makes fail on purpose, 0 to 1

    def __post_init__(self) -> None:
        _validate_fields(self, "consumer")
        if self.interval_min > self.interval_max:
            raise ConfigError(
                "consumer.interval_min must be <= consumer.interval_max, got "
                f"interval_min {self.interval_min!r} and interval_max {self.interval_max!r}; "
                "lower interval_min or raise interval_max"
            )


@dataclass(frozen=True)
class ProducerConfig:
    """Producer settings. Durations are in seconds."""

    interval: float = 5  # seconds between turns
    max_queued: int = 0  # pause while more jobs than this are queued, 0 for no limit
    function: str = ""  # module:function, or empty to run the file pipeline

    def __post_init__(self) -> None:
        _validate_fields(self, "producer")


@dataclass(frozen=True)
class CleanerConfig:
    """Cleaner settings. Durations are in seconds."""

    interval: float = 30  # seconds between sweeps
    retention: float = 0  # seconds to keep finished rows, 0 to keep them forever

    def __post_init__(self) -> None:
        _validate_fields(self, "cleaner")


@dataclass(frozen=True)
class GeneralConfig:
    """Settings shared by every worker of a process. Durations are in seconds.

    `primary_path` is stored absolute and resolved. The loaders resolve a relative
    path against the config file's directory. Built directly, this class resolves
    it against the current directory.
    """

    primary_path: Path = Path(".")  # files and the default database
    n_prod: int = 1  # producers in this process; 0 runs none
    n_cons: int = 1  # consumers in this process; 0 runs none
    queue: str = "default"  # queue name the workers use
    database: str = "queue.sqlite3"  # SQLite file under primary_path, or a postgresql:// URL
    synchronous: str = "normal"  # normal or full: whether every commit waits for the disk
    shutdown_grace: float = 10  # seconds running jobs get to finish on a graceful stop

    def __post_init__(self) -> None:
        _validate_fields(self, "general")
        _check_database_scheme("general.database", self.database)

    def __repr__(self) -> str:
        # The default repr would show the password of a PostgreSQL URL.
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["database"] = _redact_url(self.database)
        return f"GeneralConfig({', '.join(f'{name}={value!r}' for name, value in values.items())})"


@dataclass(frozen=True)
class WebConfig:
    """Settings of the `basic web-app` dashboard."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str = field(default="", repr=False)  # required when host is not a loopback address

    def __post_init__(self) -> None:
        _validate_fields(self, "web")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen dataclass per section of config.yaml.

    Build it with load_config or config_from_dict, which also check that
    `general.primary_path` is a writable directory.
    """

    consumer: ConsumerConfig
    producer: ProducerConfig
    cleaner: CleanerConfig
    general: GeneralConfig
    web: WebConfig
    source: Path | None = None  # the file the config was loaded from, None without a file

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL URL when `general.database` is one, else None."""
        return self.general.database if _is_database_url(self.general.database) else None

    @property
    def database_path(self) -> Path | None:
        """The SQLite file: `general.database` resolved against `general.primary_path`, None for a URL."""
        if self.database_url is not None:
            return None
        return (self.general.primary_path / Path(self.general.database).expanduser()).resolve()

    def replace(self, **changes: Any) -> Config:
        """Return a copy with `changes` applied and validated, raising ConfigError as loading does.

        A change is a dotted key (`**{"consumer.n_time": 1}`) or a whole section:
        a mapping updates only the keys it names, a section dataclass replaces them all.
        A new relative `general.primary_path` is resolved against the directory of
        `source`, else against the current directory. Environment overrides are not applied again.
        """
        data: dict[str, Any] = self.to_dict()
        for name, value in changes.items():
            section, dot, key = name.partition(".")
            if dot:
                data.setdefault(section, {})[key] = value
                continue
            if is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)
            current = data.get(section) or {}
            data[section] = {**current, **value} if isinstance(value, Mapping) else value

        base_dir = self.source.parent if self.source is not None else Path.cwd()
        return _build(data, base_dir=base_dir, environ={}, source=self.source, label=None)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the config as nested plain dicts, shaped like config.yaml."""
        data = {name: asdict(getattr(self, name)) for name in _RULES}
        data["general"]["primary_path"] = str(self.general.primary_path)
        return data


_SECTION_TYPES: dict[str, type] = {
    "consumer": ConsumerConfig,
    "producer": ProducerConfig,
    "cleaner": CleanerConfig,
    "general": GeneralConfig,
    "web": WebConfig,
}


def load_config(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file, raising ConfigError on the first problem.

    Without `path`, ./config.yaml is used when present, else the defaults. A given
    path that does not exist is an error. Relative paths in the file are relative to
    its directory. PERSISTENTQ_DATABASE and PERSISTENTQ_WEB_TOKEN in `environ`
    (default: os.environ) override `general.database` and `web.token` when non-empty.
    """
    file = _find_config_file(path)
    if file is None:
        return _build(None, base_dir=Path.cwd(), environ=environ, source=None, label=None)

    label = str(file)
    data = _parse_yaml(_read_text(file, label), label)
    source = file.resolve()
    return _build(data, base_dir=source.parent, environ=environ, source=source, label=label)


def config_from_dict(
    data: Mapping[str, Any] | None,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Validate `data`, shaped like config.yaml, and return a Config.

    Relative paths are resolved against `base_dir`, which defaults to the directory of
    `source`, else the current directory. Environment overrides apply as in load_config.
    """
    if base_dir is None:
        base_dir = source.resolve().parent if source is not None else Path.cwd()
    label = str(source) if source is not None else None
    return _build(data, base_dir=Path(base_dir), environ=environ, source=source, label=label)


def require_web_token(config: Config) -> None:
    """Raise ConfigError when `web.host` is not a loopback address and `web.token` is empty."""
    host = config.web.host
    if config.web.token or _is_loopback(host):
        return
    prefix = f"{config.source}: " if config.source is not None else ""
    raise ConfigError(
        f"{prefix}web.token is empty but web.host {host!r} is not a loopback address; "
        "set web.token or PERSISTENTQ_WEB_TOKEN, or set web.host to 127.0.0.1"
    )


def _build(
    data: object,
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None,
    source: Path | None,
    label: str | None,
) -> Config:
    """Validate parsed config data and return a Config.

    Every error message starts with `label`, except that a bad override names its environment variable instead.
    """
    # Overrides are checked before the try below, so that their messages name the variable and not the file.
    overrides = _read_env_overrides(os.environ if environ is None else environ)
    try:
        sections = _sections_from_data(data)
        for (section, key), value in overrides.items():
            sections[section][key] = value
        config = _make_config(sections, base_dir, source)
        _check_primary_path(config.general.primary_path)
    except ConfigError as exc:
        if label is None:
            raise
        raise ConfigError(f"{label}: {exc}") from exc.__cause__
    return config


def _sections_from_data(data: object) -> dict[str, dict[str, Any]]:
    """Check the shape of the parsed data and return every section as a dict of known keys."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of sections ({', '.join(_RULES)}), "
            f"got {_show(data)}; start the file with a section name such as 'consumer:'"
        )

    sections: dict[str, dict[str, Any]] = {name: {} for name in _RULES}
    for name, body in data.items():
        if name not in _RULES:
            raise ConfigError(_unknown_section_message(name))
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(
                f"{name} must be a mapping of keys, got {_show(body)}; "
                f"indent its keys under '{name}:'"
            )
        for key in body:
            if key not in _RULES[name]:
                raise ConfigError(_unknown_key_message(name, key))
        sections[name] = dict(body)
    return sections


def _unknown_section_message(name: object) -> str:
    owners = _sections_with_key(name)
    if owners:
        return f"unknown section {name!r}; it is a key of {' and '.join(owners)}, so indent it under that section"
    matches = get_close_matches(str(name), list(_RULES), n=1)
    fix = f"did you mean {matches[0]!r}?" if matches else f"the sections are {', '.join(_RULES)}"
    return f"unknown section {name!r}; {fix}"


def _unknown_key_message(section: str, key: object) -> str:
    known = list(_RULES[section])
    matches = get_close_matches(str(key), known, n=1)
    if matches:
        fix = f"did you mean {matches[0]!r}?"
    elif _sections_with_key(key):
        fix = f"{key} belongs under {' or '.join(_sections_with_key(key))}"
    else:
        fix = f"remove it or use one of the keys of {section}: {', '.join(known)}"
    return f"unknown key '{section}.{key}'; {fix}"


def _sections_with_key(key: object) -> list[str]:
    return [name for name, rules in _RULES.items() if key in rules]


def _read_env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Return (section, key) -> value for each override variable set non-empty in `environ`.

    Each value is checked as its key would be, and a ConfigError names the variable.
    """
    overrides = {}
    for variable, (section, key) in _ENV_OVERRIDES.items():
        value = environ.get(variable)
        if not value:
            continue
        source = f"{variable} (overrides {section}.{key})"
        default = getattr(_SECTION_TYPES[section], key)
        _check_value(source, value, _RULES[section][key], default)
        if (section, key) == ("general", "database"):
            _check_database_scheme(source, value)
        overrides[(section, key)] = value
    return overrides


def _make_config(sections: dict[str, dict[str, Any]], base_dir: Path, source: Path | None) -> Config:
    general = dict(sections["general"])
    primary_path = general.get("primary_path", ".")
    # A value of the wrong type, empty or with a NUL is left for GeneralConfig to reject with a clear message.
    if isinstance(primary_path, (str, os.PathLike)) and str(primary_path) and not _contains_nul(primary_path):
        general["primary_path"] = (base_dir / Path(primary_path).expanduser()).resolve()
    return Config(
        consumer=ConsumerConfig(**sections["consumer"]),
        producer=ProducerConfig(**sections["producer"]),
        cleaner=CleanerConfig(**sections["cleaner"]),
        general=GeneralConfig(**general),
        web=WebConfig(**sections["web"]),
        source=source,
    )


def _check_primary_path(path: Path) -> None:
    """Create `path` when missing and check that a file can be created in it."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"general.primary_path {str(path)!r} is a file, not a directory; "
            "set it to a directory, which is created when missing"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".persistentq-probe-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"general.primary_path {str(path)!r} is not a writable directory: {exc.strerror or exc}; "
            "create it with write permission or set primary_path to a directory you can write to"
        ) from exc


def _validate_fields(section: object, name: str) -> None:
    """Check every field of a section dataclass and store it converted to the rule's type."""
    for item in fields(section):  # type: ignore[arg-type]
        default = str(item.default) if isinstance(item.default, Path) else item.default
        key = f"{name}.{item.name}"
        value = _check_value(key, getattr(section, item.name), _RULES[name][item.name], default)
        object.__setattr__(section, item.name, value)


def _check_value(key: str, value: Any, rule: _Rule, default: object) -> Any:
    """Return `value` converted to the rule's type, or raise ConfigError naming `key`."""
    value_text = f"a value of type {type(value).__name__}" if rule.secret else _show(value)
    fix = _type_fix(value, rule, default)
    if fix is None and _contains_nul(value):
        # os and sqlite3 calls raise ValueError on a path with a NUL, and PostgreSQL rejects NUL in text.
        raise ConfigError(f"{key} contains a NUL character (\\x00), got {value_text}; remove it")
    if fix is None and not _value_allowed(value, rule):
        fix = _range_fix(value, rule, default)
    if fix is not None:
        raise ConfigError(f"{key} must be {rule.describe()}, got {value_text}; {fix}")

    if rule.kind is float:
        return float(value)
    if rule.kind is Path:
        return Path(value).expanduser().resolve()
    return value


def _type_fix(value: Any, rule: _Rule, default: object) -> str | None:
    """Return how to fix a value of the wrong type, or None when the type is right."""
    if value is None:
        return f"set a value or remove the key to use the default {default!r}"
    if isinstance(value, (list, tuple, Mapping)):
        return "write a single value, not a list or a mapping"
    if rule.kind in (int, float):
        return _number_type_fix(value, rule, default)

    accepted = (str, os.PathLike) if rule.kind is Path else (str,)
    if isinstance(value, accepted):
        return None
    if isinstance(value, bool):
        # YAML 1.1 reads yes, no, on and off unquoted as booleans.
        return "YAML reads yes/no/on/off/true/false as a boolean, so put the value in quotes"
    return "put the value in quotes"


def _number_type_fix(value: Any, rule: _Rule, default: object) -> str | None:
    if isinstance(value, bool):
        return f"write a number such as {default!r}, not yes/no/true/false"
    if isinstance(value, int) or (rule.kind is float and isinstance(value, float)):
        return None
    if isinstance(value, float):
        return f"write a whole number such as {default!r}"
    if isinstance(value, str) and _parses_as_number(value):
        return "remove the quotes so that YAML reads it as a number"
    return f"write a plain number such as {default!r}"


def _contains_nul(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and "\0" in str(value)


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value_allowed(value: Any, rule: _Rule) -> bool:
    """Return whether a value of the right type is in the rule's range or choices."""
    if rule.kind in (int, float):
        return (
            _is_finite(value)
            and (rule.low is None or value >= rule.low)
            and (rule.above is None or value > rule.above)
            and (rule.high is None or value <= rule.high)
        )
    if rule.choices:
        return value in rule.choices
    if rule.import_path:
        return value == "" or _is_import_path(value)
    return not rule.nonempty or str(value) != ""


def _is_finite(number: int | float) -> bool:
    # math.isfinite() raises OverflowError on an int too large for a float, and every int is finite.
    return isinstance(number, int) or math.isfinite(number)


def _range_fix(value: Any, rule: _Rule, default: object) -> str:
    """Return how to fix a value of the right type that the rule does not allow."""
    if rule.kind in (int, float):
        return _number_range_fix(value, rule)
    if rule.choices:
        matches = get_close_matches(value.lower(), rule.choices, n=1)
        return f"did you mean {matches[0]!r}?" if matches else "set it to one of those"
    if rule.import_path:
        return "write the module path, a colon and the function name, as in 'mypackage.jobs:process'"
    return f"set a value or remove the key to use the default {default!r}"


def _number_range_fix(value: int | float, rule: _Rule) -> str:
    if not _is_finite(value):
        return "write a finite number"
    if rule.high is not None and value > rule.high:
        return f"set it to {rule.high} or less"
    if rule.above is not None:
        return f"set it above {rule.above}"
    return f"set it to {rule.low} or more"


def _is_import_path(text: str) -> bool:
    """Return whether `text` has the form `module.path:function_name`."""
    module, colon, name = text.partition(":")
    return bool(colon) and name.isidentifier() and all(part.isidentifier() for part in module.split("."))


def _check_database_scheme(key: str, database: str) -> None:
    """Raise ConfigError naming `key` when `database` is a URL other than postgresql:// or postgres://."""
    scheme, separator, _ = database.partition("://")
    if separator and not _is_database_url(database):
        raise ConfigError(
            f"{key} has the URL scheme {_show(scheme)}, expected a postgresql:// "
            "or postgres:// URL or a SQLite file path; correct the scheme"
        )


def _is_database_url(database: str) -> bool:
    return database.lower().startswith(_POSTGRES_SCHEMES)


def _redact_url(database: str) -> str:
    """Return `database` with the password of a URL replaced by ***."""
    if not _is_database_url(database):
        return database
    from .store.postgres import redact_url

    return redact_url(database)


def _is_loopback(host: str) -> bool:
    """Return whether `host` is localhost, 127.0.0.0/8 or ::1."""
    address = host.strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _ShortRepr(reprlib.Repr):
    """A reprlib.Repr that shows any int briefly, because repr() of a huge int is slow or raises ValueError."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= 128:
            return super().repr_int(x, level)
        digits = int(x.bit_length() * math.log10(2)) + 1
        return f"<integer of about {digits} digits>"


# Bounds on depth and length keep the cost low even for a YAML "billion laughs",
# whose nested aliases would make repr() build a string of exponential length.
_SHORT_REPR = _ShortRepr()
_SHORT_REPR.maxlevel = 2
_SHORT_REPR.maxdict = _SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = 4
_SHORT_REPR.maxset = _SHORT_REPR.maxfrozenset = 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxlong = _SHORT_REPR.maxother = 60


def _show(value: object) -> str:
    """Return a short repr of a value for an error message."""
    if value is None:
        return "an empty value (null)"
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _find_config_file(path: str | os.PathLike[str] | None) -> Path | None:
    """Return the file to load: `path`, else ./config.yaml when present, else None."""
    if path is None:
        default = Path(DEFAULT_CONFIG_NAME)
        return default if default.is_file() else None

    file = Path(path)
    if not file.exists():
        raise ConfigError(f"config file {str(file)!r} not found (looked at {file.absolute()}); check the path")
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} is not a regular file; give the path of a YAML file")
    return file


def _read_text(file: Path, label: str) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: invalid UTF-8 at byte {exc.start}; save the file as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{label}: failed to read the config file: {exc.strerror or exc}; check its permissions") from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key repeated in one mapping. PyYAML's SafeLoader keeps the last value silently."""


    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) may repeat, and keys they bring in may be overridden.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # int() raises ValueError on an integer of more than sys.get_int_max_str_digits() digits,
        # and date() on a date such as 2024-02-30. Report either at its position in the file.
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            problem = f"invalid {node.tag.rpartition(':')[2]} {_show(node.value)}"
            reason = str(exc).partition(";")[0]  # drops Python's advice to call sys.set_int_max_str_digits()
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark, note=reason) from exc


# PyYAML follows YAML 1.1, where 1e9 (no dot, no exponent sign) is a string.
# YAML 1.2 and most readers of a config take it as a number, so this loader does too.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, label: str) -> object:
    """Parse YAML text, raising ConfigError that names the line and column (1-based) of a syntax error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_error_message(exc, label)) from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{label}: invalid YAML: {detail}; correct the file") from exc
    except RecursionError as exc:
        raise ConfigError(
            f"{label}: invalid YAML: lists or mappings nest too deeply to parse; "
            "no config key takes a nested value, so remove the nesting"
        ) from exc


def _yaml_error_message(exc: yaml.MarkedYAMLError, label: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown position"
    problem = " ".join((exc.problem or exc.context or "syntax error").split())
    if "'\\t'" in problem:
        return f"{label}: tab character at {where}; YAML does not allow tabs here, indent with spaces"
    if "duplicate key" in problem:
        return f"{label}: invalid YAML at {where}: {problem}; keep only one of them"
    if isinstance(exc, yaml.constructor.ConstructorError) and problem.startswith("invalid ") and exc.note:
        return f"{label}: {problem} at {where}: {exc.note}; correct the value there"
    return f"{label}: invalid YAML at {where}: {problem}; correct the syntax there"
