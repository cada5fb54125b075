"""Tests of persistentq.config: defaults, path resolution, overrides and error messages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from persistentq.config import (
    DEFAULT_CONFIG_NAME,
    CleanerConfig,
    Config,
    ConsumerConfig,
    GeneralConfig,
    ProducerConfig,
    WebConfig,
    config_from_dict,
    load_config,
    require_web_token,
)
from persistentq.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG_NAME

DEFAULTS = {
    "consumer": {
        "n_time": 3600.0,
        "n_tries": 3,
        "interval_min": 7.0,
        "interval_max": 15.0,
        "poll_interval": 1.0,
        "lease": 30.0,
        "retry_backoff": 1.0,
        "function": "",
        "sync_mode": "process",
        "failure_rate": 0.0,
    },
    "producer": {"interval": 5.0, "max_queued": 0, "function": ""},
    "cleaner": {"interval": 30.0, "retention": 0.0},
    "general": {
        "primary_path": ".",
        "n_prod": 1,
        "n_cons": 1,
        "queue": "default",
        "database": "queue.sqlite3",
        "synchronous": "normal",
        "shutdown_grace": 10.0,
    },
    "web": {"host": "127.0.0.1", "port": 8000, "token": ""},
}

FULL_FILE = """\
consumer:
    n_time: 60
    n_tries: 5
    interval_min: 0
    interval_max: 0.5
    poll_interval: 0.25
    lease: 12
    retry_backoff: 2
    function: "mypackage.jobs:process"
    sync_mode: thread
    failure_rate: 0.3
producer:
    interval: 0
    max_queued: 100
    function: "mypackage.jobs:make"
cleaner:
    interval: 5
    retention: 86400
general:
    primary_path: work
    n_prod: 0
    n_cons: 8
    queue: images
    database: db/images.sqlite3
    synchronous: full
    shutdown_grace: 2.5
web:
    host: 0.0.0.0
    port: 9000
    token: s3cret
"""


def write_config(directory: Path, text: str, name: str = DEFAULT_CONFIG_NAME) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def without_primary_path(data: dict) -> dict:
    """Return a copy of a to_dict() result without general.primary_path, which differs per test."""
    copy = {section: dict(keys) for section, keys in data.items()}
    del copy["general"]["primary_path"]
    return copy


def load_error(path: Path) -> str:
    """Return the message of the ConfigError that loading `path` raises."""
    return load_error_with_env(path, {})


def load_error_with_env(path: Path, environ: dict[str, str]) -> str:
    """Return the message of the ConfigError that loading `path` with `environ` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    return str(info.value)


# Defaults and values


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ./config.yaml every key has its default and paths are under the current directory."""
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})

    assert without_primary_path(config.to_dict()) == without_primary_path(DEFAULTS)
    assert config.general.primary_path == tmp_path.resolve()
    assert config.source is None
    assert config.database_path == tmp_path.resolve() / "queue.sqlite3"
    assert config.database_url is None


def test_defaults_match_dataclasses(tmp_path: Path) -> None:
    """The dataclass defaults are the documented ones."""
    config = config_from_dict(None, base_dir=tmp_path, environ={})

    assert config.consumer == ConsumerConfig()
    assert config.producer == ProducerConfig()
    assert config.cleaner == CleanerConfig()
    assert config.web == WebConfig()
    assert config.general == GeneralConfig(primary_path=tmp_path.resolve())


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n# and another\n", "consumer:\n", "consumer:\nweb:\n  # nothing\n"],
    ids=["empty", "blank-lines", "comments", "empty-section", "two-empty-sections"],
)
def test_defaults_from_empty_file(tmp_path: Path, text: str) -> None:
    """An empty file, comments only or empty sections give the defaults."""
    path = write_config(tmp_path, text)
    config = load_config(path, environ={})

    assert without_primary_path(config.to_dict()) == without_primary_path(DEFAULTS)
    assert config.general.primary_path == tmp_path.resolve()
    assert config.source == path.resolve()


def test_values_from_full_file(tmp_path: Path) -> None:
    """Every key set in the file reaches the Config, numbers of float keys as floats."""
    path = write_config(tmp_path, FULL_FILE)
    config = load_config(path, environ={})

    assert config.consumer == ConsumerConfig(
        n_time=60.0,
        n_tries=5,
        interval_min=0.0,
        interval_max=0.5,
        poll_interval=0.25,
        lease=12.0,
        retry_backoff=2.0,
        function="mypackage.jobs:process",
        sync_mode="thread",
        failure_rate=0.3,
    )
    assert config.producer == ProducerConfig(interval=0.0, max_queued=100, function="mypackage.jobs:make")
    assert config.cleaner == CleanerConfig(interval=5.0, retention=86400.0)
    assert config.general.primary_path == (tmp_path / "work").resolve()
    assert (config.general.n_prod, config.general.n_cons) == (0, 8)
    assert config.general.queue == "images"
    assert config.general.synchronous == "full"
    assert config.general.shutdown_grace == 2.5
    assert config.web == WebConfig(host="0.0.0.0", port=9000, token="s3cret")
    assert isinstance(config.consumer.n_time, float)


def test_dot_config_yaml_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config() without a path reads ./config.yaml when it exists."""
    path = write_config(tmp_path, "consumer:\n    n_tries: 7\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})

    assert config.consumer.n_tries == 7
    assert config.source == path.resolve()


def test_repo_config_lists_every_key() -> None:
    """The example config.yaml contains every known key and no other."""
    import yaml

    example = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))
    example_keys = {section: set(keys) for section, keys in example.items()}
    known_keys = {section: set(keys) for section, keys in DEFAULTS.items()}

    assert example_keys == known_keys


def test_repo_config_loads_defaults(tmp_path: Path) -> None:
    """The example config.yaml gives the defaults, except primary_path ./data and a demo failure_rate."""
    path = tmp_path / DEFAULT_CONFIG_NAME
    shutil.copyfile(REPO_CONFIG, path)
    config = load_config(path, environ={})
    expected = without_primary_path(DEFAULTS)
    expected["consumer"] = {**expected["consumer"], "failure_rate": 0.2}

    assert without_primary_path(config.to_dict()) == expected
    assert config.general.primary_path == (tmp_path / "data").resolve()
    assert config.general.primary_path.is_dir()


def test_config_from_dict_notebook(tmp_path: Path) -> None:
    """config_from_dict takes a partial dict and keeps the other defaults."""
    config = config_from_dict({"consumer": {"n_time": 5}}, base_dir=tmp_path, environ={})

    assert config.consumer.n_time == 5.0
    assert config.consumer.n_tries == 3
    assert config.general.primary_path == tmp_path.resolve()


def test_config_from_dict_leaves_input(tmp_path: Path) -> None:
    """config_from_dict does not change the dict it is given."""
    data = {"general": {"primary_path": "sub"}}
    config_from_dict(data, base_dir=tmp_path, environ={"PERSISTENTQ_DATABASE": "other.sqlite3"})

    assert data == {"general": {"primary_path": "sub"}}


def test_to_dict_round_trip(tmp_path: Path) -> None:
    """config_from_dict(config.to_dict()) gives an equal Config."""
    config = load_config(write_config(tmp_path, FULL_FILE), environ={})
    again = config_from_dict(config.to_dict(), environ={}, source=config.source)

    assert again == config


# Paths


def test_primary_path_relative_to_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative primary_path is resolved against the config file's directory, not the current one."""
    path = write_config(tmp_path / "conf", "general:\n    primary_path: ../work/jobs\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / DEFAULT_CONFIG_NAME, environ={})

    assert config.general.primary_path == (tmp_path / "work" / "jobs").resolve()
    assert config.general.primary_path.is_dir()
    assert config.source == path.resolve()


def test_primary_path_absolute_kept(tmp_path: Path) -> None:
    """An absolute primary_path is used as it is."""
    target = tmp_path / "absolute"
    path = write_config(tmp_path / "conf", f"general:\n    primary_path: '{target}'\n")
    config = load_config(path, environ={})

    assert config.general.primary_path == target.resolve()


def test_primary_path_probe_removed(tmp_path: Path) -> None:
    """The write probe in primary_path leaves no file behind."""
    path = write_config(tmp_path, "general:\n    primary_path: data\n")
    load_config(path, environ={})

    assert list((tmp_path / "data").iterdir()) == []


def test_database_under_primary_path(tmp_path: Path) -> None:
    """A relative database is a file under primary_path."""
    path = write_config(tmp_path, "general:\n    primary_path: data\n    database: db/q.sqlite3\n")
    config = load_config(path, environ={})

    assert config.database_path == (tmp_path / "data" / "db" / "q.sqlite3").resolve()
    assert config.database_url is None
    assert config.general.database == "db/q.sqlite3"


def test_database_absolute_kept(tmp_path: Path) -> None:
    """An absolute database path is not moved under primary_path."""
    database = tmp_path / "elsewhere" / "q.sqlite3"
    path = write_config(tmp_path, f"general:\n    primary_path: data\n    database: '{database}'\n")
    config = load_config(path, environ={})

    assert config.database_path == database.resolve()


@pytest.mark.parametrize("url", ["postgresql://user@db.example/jobs", "postgres://db.example/jobs"])
def test_database_url_kept(tmp_path: Path, url: str) -> None:
    """A postgresql:// or postgres:// database is a URL, not a file."""
    path = write_config(tmp_path, f"general:\n    database: '{url}'\n")
    config = load_config(path, environ={})

    assert config.database_url == url
    assert config.database_path is None


# Environment overrides


def test_env_overrides_keys(tmp_path: Path) -> None:
    """PERSISTENTQ_DATABASE and PERSISTENTQ_WEB_TOKEN override general.database and web.token."""
    path = write_config(tmp_path, "general:\n    database: file.sqlite3\nweb:\n    token: from-file\n")
    environ = {"PERSISTENTQ_DATABASE": "postgresql://u:pw@db/jobs", "PERSISTENTQ_WEB_TOKEN": "from-env"}
    config = load_config(path, environ=environ)

    assert config.general.database == "postgresql://u:pw@db/jobs"
    assert config.database_url == "postgresql://u:pw@db/jobs"
    assert config.web.token == "from-env"


def test_env_database_under_primary_path(tmp_path: Path) -> None:
    """A relative PERSISTENTQ_DATABASE is a file under primary_path too."""
    path = write_config(tmp_path, "general:\n    primary_path: data\n")
    config = load_config(path, environ={"PERSISTENTQ_DATABASE": "env.sqlite3"})

    assert config.database_path == (tmp_path / "data" / "env.sqlite3").resolve()


def test_env_empty_ignored(tmp_path: Path) -> None:
    """An empty environment variable leaves the file's value."""
    path = write_config(tmp_path, "web:\n    token: from-file\n")
    config = load_config(path, environ={"PERSISTENTQ_WEB_TOKEN": "", "PERSISTENTQ_DATABASE": ""})

    assert config.web.token == "from-file"
    assert config.general.database == "queue.sqlite3"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PERSISTENTQ_DATABASE", "mysql://db/jobs", "has the URL scheme 'mysql'"),
        ("PERSISTENTQ_DATABASE", "jobs\0.sqlite3", "contains a NUL character"),
        ("PERSISTENTQ_WEB_TOKEN", "t0k\0en", "contains a NUL character"),
    ],
    ids=["database-scheme", "database-nul", "token-nul"],
)
def test_env_bad_value_names_variable(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    """A bad override is reported under its environment variable and key, not under the file."""
    path = write_config(tmp_path, "general:\n    database: file.sqlite3\nweb:\n    token: from-file\n")
    message = load_error_with_env(path, {variable: value})
    key = {"PERSISTENTQ_DATABASE": "general.database", "PERSISTENTQ_WEB_TOKEN": "web.token"}[variable]

    assert message.startswith(f"{variable} (overrides {key}) ")
    assert expected in message
    assert str(path) not in message


def test_env_token_hidden_in_message(tmp_path: Path) -> None:
    """A bad PERSISTENTQ_WEB_TOKEN is reported by type, never by value."""
    message = load_error_with_env(write_config(tmp_path, ""), {"PERSISTENTQ_WEB_TOKEN": "t0k\0en"})

    assert "PERSISTENTQ_WEB_TOKEN" in message
    assert "t0k" not in message


def test_env_default_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `environ`, load_config reads os.environ."""
    monkeypatch.setenv("PERSISTENTQ_WEB_TOKEN", "from-os")
    config = load_config(write_config(tmp_path, ""))

    assert config.web.token == "from-os"


# Errors in files: each row is (file text, substrings the message must contain).

BAD_FILES = {
    "unknown-key": ("consumer:\n    n_tris: 3\n", ["'consumer.n_tris'", "did you mean 'n_tries'?"]),
    "unknown-key-no-match": ("web:\n    colour: red\n", ["'web.colour'", "host, port, token"]),
    "key-in-wrong-section": ("general:\n    n_tries: 3\n", ["'general.n_tries'", "consumer"]),
    "unknown-section": ("consumers:\n    n_tries: 3\n", ["'consumers'", "did you mean 'consumer'?"]),
    "key-at-top-level": ("n_tries: 3\n", ["'n_tries'", "under"]),
    "top-level-scalar": ("just text\n", ["top level", "'just text'"]),
    "top-level-list": ("- consumer\n", ["top level", "['consumer']"]),
    "section-list": ("consumer:\n    - 1\n", ["consumer must be a mapping", "[1]"]),
    "section-scalar": ("web: 8000\n", ["web must be a mapping", "8000"]),
    "quoted-number": ('consumer:\n    n_time: "3600"\n', ["consumer.n_time", "'3600'", "remove the quotes"]),
    "quoted-int": ("consumer:\n    n_tries: '3'\n", ["consumer.n_tries", "'3'", "remove the quotes"]),
    "string-for-int": ("consumer:\n    n_tries: three\n", ["consumer.n_tries", "'three'", "integer"]),
    "string-for-seconds": ("consumer:\n    n_time: 1h\n", ["consumer.n_time", "'1h'", "number"]),
    "bool-for-int": ("consumer:\n    n_tries: yes\n", ["consumer.n_tries", "True", "yes/no"]),
    "bool-true-for-int": ("general:\n    n_cons: true\n", ["general.n_cons", "True"]),
    "bool-for-float": ("consumer:\n    lease: no\n", ["consumer.lease", "False"]),
    "float-for-int": ("general:\n    n_cons: 1.5\n", ["general.n_cons", "1.5", "whole number"]),
    "list-for-value": ("consumer:\n    n_time: [1, 2]\n", ["consumer.n_time", "[1, 2]", "single value"]),
    "null-value": ("consumer:\n    n_time:\n", ["consumer.n_time", "null", "3600"]),
    "int-for-string": ("general:\n    queue: 5\n", ["general.queue", "5", "quotes"]),
    "yaml-bool-for-string": ("general:\n    synchronous: off\n", ["general.synchronous", "False", "as a boolean", "quotes"]),
    "int-for-path": ("general:\n    primary_path: 5\n", ["general.primary_path", "5"]),
    "n_tries-zero": ("consumer:\n    n_tries: 0\n", ["consumer.n_tries", "got 0", "from 1 to 1000000000"]),
    "cleaner-interval-zero": ("cleaner:\n    interval: 0\n", ["cleaner.interval", "got 0"]),
    "n_tries-huge": (
        "consumer:\n    n_tries: 99999999999999999999999\n",
        ["consumer.n_tries", "got 99999999999999999999999", "from 1 to 1000000000", "set it to 1000000000 or less"],
    ),
    "n_tries-too-many-digits": (
        "consumer:\n    n_tries: 1" + "0" * 5000 + "\n",
        ["invalid int", "line 2, column 14", "5001 digits", "correct the value"],
    ),
    "n_time-zero": ("consumer:\n    n_time: 0\n", ["consumer.n_time", "got 0", "> 0"]),
    "n_time-negative": ("consumer:\n    n_time: -5\n", ["consumer.n_time", "got -5"]),
    "n_time-infinite": ("consumer:\n    n_time: .inf\n", ["consumer.n_time", "inf", "finite"]),
    "n_time-nan": ("consumer:\n    n_time: .nan\n", ["consumer.n_time", "nan", "finite"]),
    "n_time-huge": (
        "consumer:\n    n_time: 1.0e+12\n",
        ["consumer.n_time", "got 1000000000000.0", "> 0 and <= 1000000000", "set it to 1000000000 or less"],
    ),
    "n_time-huge-int": (
        "consumer:\n    n_time: 1" + "0" * 400 + "\n",
        ["consumer.n_time", "integer of about 401 digits", "set it to 1000000000 or less"],
    ),
    "lease-zero": ("consumer:\n    lease: 0\n", ["consumer.lease", "got 0"]),
    "poll_interval-zero": ("consumer:\n    poll_interval: 0\n", ["consumer.poll_interval", "got 0"]),
    "interval_min-negative": ("consumer:\n    interval_min: -1\n", ["consumer.interval_min", "got -1"]),
    "retry_backoff-negative": ("consumer:\n    retry_backoff: -1\n", ["consumer.retry_backoff", "got -1"]),
    "failure_rate-high": (
        "consumer:\n    failure_rate: 1.5\n",
        ["consumer.failure_rate", "1.5", "from 0 to 1", "set it to 1 or less"],
    ),
    "failure_rate-negative": ("consumer:\n    failure_rate: -0.1\n", ["consumer.failure_rate", "-0.1"]),
    "sync_mode-unknown": ("consumer:\n    sync_mode: fork\n", ["consumer.sync_mode", "'fork'", "'thread'"]),
    "sync_mode-case": ("consumer:\n    sync_mode: Thread\n", ["consumer.sync_mode", "did you mean 'thread'?"]),
    "producer-interval-negative": ("producer:\n    interval: -1\n", ["producer.interval", "got -1"]),
    "max_queued-negative": ("producer:\n    max_queued: -1\n", ["producer.max_queued", "got -1"]),
    "max_queued-huge": ("producer:\n    max_queued: 1000000001\n", ["producer.max_queued", "got 1000000001"]),
    "cleaner-interval-negative": ("cleaner:\n    interval: -1\n", ["cleaner.interval", "got -1"]),
    "retention-negative": ("cleaner:\n    retention: -1\n", ["cleaner.retention", "got -1"]),
    "retention-huge": ("cleaner:\n    retention: 1.0e+10\n", ["cleaner.retention", "got 10000000000.0"]),
    "n_prod-negative": ("general:\n    n_prod: -1\n", ["general.n_prod", "got -1"]),
    "n_cons-negative": ("general:\n    n_cons: -2\n", ["general.n_cons", "got -2"]),
    "shutdown_grace-negative": ("general:\n    shutdown_grace: -1\n", ["general.shutdown_grace", "got -1"]),
    "synchronous-unknown": ("general:\n    synchronous: extra\n", ["general.synchronous", "'extra'", "'full'"]),
    "queue-empty": ("general:\n    queue: ''\n", ["general.queue", "''", "non-empty"]),
    "queue-nul": ('general:\n    queue: "a\\0b"\n', ["general.queue", "contains a NUL character", "'a\\x00b'"]),
    "primary_path-nul": (
        'general:\n    primary_path: "a\\0b"\n',
        ["general.primary_path", "contains a NUL character", "'a\\x00b'", "remove it"],
    ),
    "database-nul": (
        'general:\n    database: "a\\0b"\n',
        ["general.database", "contains a NUL character", "'a\\x00b'", "remove it"],
    ),
    "database-empty": ("general:\n    database: ''\n", ["general.database", "''"]),
    "database-other-scheme": ("general:\n    database: 'mysql://db/jobs'\n", ["general.database", "'mysql'"]),
    "host-empty": ("web:\n    host: ''\n", ["web.host", "''"]),
    "port-zero": ("web:\n    port: 0\n", ["web.port", "got 0", "from 1 to 65535", "set it to 1 or more"]),
    "port-high": ("web:\n    port: 70000\n", ["web.port", "got 70000", "set it to 65535 or less"]),
    "interval_min-above-max": (
        "consumer:\n    interval_min: 20\n    interval_max: 10\n",
        ["consumer.interval_min", "20", "consumer.interval_max", "10"],
    ),
    "interval_min-above-default-max": ("consumer:\n    interval_min: 16\n", ["consumer.interval_min", "16"]),
    "function-no-colon": ("consumer:\n    function: mymodule.process\n", ["consumer.function", "'mymodule.process'"]),
    "function-no-name": ("producer:\n    function: 'mymodule:'\n", ["producer.function", "'mymodule:'"]),
    "function-space": ("consumer:\n    function: 'my module:run'\n", ["consumer.function", "'my module:run'"]),
    "function-empty-part": ("consumer:\n    function: 'a..b:run'\n", ["consumer.function", "'a..b:run'"]),
    "tab-indent": ("consumer:\n\tn_tries: 3\n", ["tab", "line 2", "spaces"]),
    "tab-after-spaces": ("consumer:\n    n_time: 1\n  \tn_tries: 3\n", ["tab", "line 3", "spaces"]),
    "broken-indent": ("consumer:\n    n_time: 5\n   n_tries: 3\n", ["invalid YAML", "line 3, column 4"]),
    "unclosed-bracket": ("consumer:\n    n_time: [1, 2\n", ["invalid YAML", "line 3, column 1"]),
    "duplicate-key": ("consumer:\n    n_tries: 2\n    n_tries: 3\n", ["duplicate key 'n_tries'", "line 3"]),
    "two-documents": ("consumer:\n---\nweb:\n", ["invalid YAML", "line 2"]),
    "date-invalid": (
        "consumer:\n    function: 2024-02-30\n",
        ["invalid timestamp '2024-02-30'", "line 2, column 15", "day is out of range"],
    ),
    "deep-list": ("consumer:\n    n_time: " + "[" * 5000 + "]" * 5000 + "\n", ["invalid YAML", "nest too deeply"]),
    "deep-list-unclosed": ("consumer:\n    n_time: " + "[" * 5000 + "\n", ["invalid YAML", "nest too deeply"]),
    "deep-mapping": ("consumer:\n    n_time: " + "{a: " * 5000 + "}" * 5000 + "\n", ["nest too deeply"]),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_rejected(tmp_path: Path, text: str, expected: list[str]) -> None:
    """Each invalid file raises one ConfigError line naming the file, the key and the value."""
    path = write_config(tmp_path, text)
    message = load_error(path)

    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for part in expected:
        assert part in message


def billion_laughs(levels: int = 9) -> str:
    """Return a YAML flow list of `levels` anchored lists, each holding 9 aliases of the one before.

    The data has only a few hundred nodes, but the last list expands to 9**levels items.
    """
    lists = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        lists.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "[" + ", ".join(lists) + "]"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("consumer:\n    n_time: {}\n", "consumer.n_time must be a number"),
        ("producer: {}\n", "producer must be a mapping"),
    ],
    ids=["value", "section"],
)
def test_billion_laughs_rejected_quickly(tmp_path: Path, template: str, expected: str) -> None:
    """Nested YAML aliases are reported at once, with a short message, instead of expanding in repr()."""
    path = write_config(tmp_path, template.format(billion_laughs()))
    message = load_error(path)

    assert message.startswith(f"{path}: ")
    assert expected in message
    assert len(message) < len(str(path)) + 300


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (section, key)
        for section, keys in DEFAULTS.items()
        for key, default in keys.items()
        if isinstance(default, (int, float))
    ],
)
def test_number_key_has_maximum(tmp_path: Path, section: str, key: str) -> None:
    """Every integer and float key rejects a value that would overflow a 64-bit integer."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({section: {key: 99999999999999999999999}}, base_dir=tmp_path, environ={})

    assert str(info.value).startswith(f"{section}.{key} must be ")
    assert "got 99999999999999999999999" in str(info.value)
    assert " or less" in str(info.value)


def test_number_maximum_inclusive(tmp_path: Path) -> None:
    """A value equal to the generic maximum of 1000000000 is accepted."""
    data = {
        "consumer": {"n_tries": 1_000_000_000, "n_time": 1_000_000_000, "interval_max": 1e9},
        "cleaner": {"retention": 1e9},
    }
    config = config_from_dict(data, base_dir=tmp_path, environ={})

    assert config.consumer.n_tries == 1_000_000_000
    assert config.consumer.n_time == 1e9
    assert config.consumer.interval_max == 1e9
    assert config.cleaner.retention == 1e9


def test_nul_in_path_from_dict(tmp_path: Path) -> None:
    """A Path object with a NUL is rejected like a string, not with os's ValueError."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"general": {"primary_path": Path("a\0b")}}, base_dir=tmp_path, environ={})

    assert str(info.value).startswith("general.primary_path contains a NUL character")


def test_missing_file_rejected(tmp_path: Path) -> None:
    """A given path that does not exist is an error naming the path."""
    message = load_error(tmp_path / "missing.yaml")

    assert "missing.yaml" in message
    assert "not found" in message


def test_directory_as_file_rejected(tmp_path: Path) -> None:
    """A directory given as the config file is an error naming it."""
    message = load_error(tmp_path)

    assert str(tmp_path) in message
    assert "not a regular file" in message


def test_non_utf8_rejected(tmp_path: Path) -> None:
    """A file that is not UTF-8 is an error naming the byte offset."""
    path = tmp_path / DEFAULT_CONFIG_NAME
    path.write_bytes(b"consumer:\n    function: '\xff'\n")
    message = load_error(path)

    assert "UTF-8" in message
    assert "byte 25" in message


def test_token_hidden_in_message(tmp_path: Path) -> None:
    """A web.token of the wrong type is reported by type, never by value."""
    path = write_config(tmp_path, "web:\n    token: 123456789\n")
    message = load_error(path)

    assert "web.token" in message
    assert "int" in message
    assert "123456789" not in message


def test_primary_path_file_rejected(tmp_path: Path) -> None:
    """A primary_path that is a regular file is an error naming it."""
    (tmp_path / "taken").write_text("not a folder", encoding="utf-8")
    path = write_config(tmp_path, "general:\n    primary_path: taken\n")
    message = load_error(path)

    assert message.startswith(f"{path}: ")
    assert "general.primary_path" in message
    assert str((tmp_path / "taken").resolve()) in message
    assert "not a directory" in message


def test_primary_path_uncreatable_rejected(tmp_path: Path) -> None:
    """A primary_path under a regular file cannot be created, and the message names the OS error."""
    (tmp_path / "taken").write_text("not a folder", encoding="utf-8")
    path = write_config(tmp_path, "general:\n    primary_path: taken/sub\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})

    assert "general.primary_path" in str(info.value)
    assert str((tmp_path / "taken" / "sub").resolve()) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.strerror in str(info.value)


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, which root bypasses"
)
def test_primary_path_read_only_rejected(tmp_path: Path) -> None:
    """A primary_path where no file can be written is an error."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    path = write_config(tmp_path, "general:\n    primary_path: read-only\n")
    try:
        message = load_error(path)
    finally:
        read_only.chmod(0o700)

    assert "general.primary_path" in message
    assert "not a writable directory" in message


def test_config_from_dict_source_label(tmp_path: Path) -> None:
    """config_from_dict names `source` in its messages."""
    source = tmp_path / "notebook.yaml"
    with pytest.raises(ConfigError) as info:
        config_from_dict({"consumer": {"n_tries": 0}}, environ={}, source=source)

    assert str(info.value).startswith(f"{source}: consumer.n_tries")


def test_config_error_is_value_error(tmp_path: Path) -> None:
    """ConfigError can be caught as ValueError."""
    with pytest.raises(ValueError):
        config_from_dict({"web": {"port": 0}}, base_dir=tmp_path, environ={})


def test_section_dataclass_validates() -> None:
    """Building a section directly applies the same rules."""
    with pytest.raises(
        ConfigError, match=r"consumer\.n_tries must be an integer from 1 to 1000000000, got 0; set it to 1 or more"
    ):
        ConsumerConfig(n_tries=0)


# replace()


def test_replace_dotted_keys(tmp_path: Path) -> None:
    """replace() sets dotted keys and keeps the rest and the original."""
    config = config_from_dict(None, base_dir=tmp_path, environ={})
    changed = config.replace(**{"consumer.n_time": 1, "general.n_cons": 4})

    assert changed.consumer.n_time == 1.0
    assert changed.general.n_cons == 4
    assert changed.consumer.n_tries == 3
    assert config.consumer.n_time == 3600.0
    assert isinstance(changed, Config)


def test_replace_section_mapping(tmp_path: Path) -> None:
    """A mapping for a section changes only the keys it names."""
    config = config_from_dict({"consumer": {"n_tries": 5}}, base_dir=tmp_path, environ={})
    changed = config.replace(consumer={"lease": 10})

    assert changed.consumer.lease == 10.0
    assert changed.consumer.n_tries == 5


def test_replace_section_dataclass(tmp_path: Path) -> None:
    """A section dataclass replaces the whole section."""
    config = config_from_dict({"web": {"port": 9000}}, base_dir=tmp_path, environ={})
    changed = config.replace(web=WebConfig(host="localhost"))

    assert changed.web == WebConfig(host="localhost")


def test_replace_primary_path_relative(tmp_path: Path) -> None:
    """A relative primary_path in replace() is resolved against the config file's directory."""
    config = load_config(write_config(tmp_path / "conf", ""), environ={})
    changed = config.replace(**{"general.primary_path": "jobs"})

    assert changed.general.primary_path == (tmp_path / "conf" / "jobs").resolve()
    assert changed.general.primary_path.is_dir()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"consumer.n_tries": 0}, "consumer.n_tries must be an integer from 1 to 1000000000, got 0; set it to 1 or more"),
        ({"consumer.n_tris": 2}, "did you mean 'n_tries'?"),
        ({"consumr": {"n_tries": 2}}, "did you mean 'consumer'?"),
        ({"consumer": {"n_tris": 2}}, "'consumer.n_tris'"),
        ({"consumer": 5}, "consumer must be a mapping"),
        ({"consumer.interval_min": 100}, "consumer.interval_max"),
        ({"web.port": "8000"}, "remove the quotes"),
    ],
    ids=["range", "dotted-typo", "section-typo", "mapping-typo", "section-scalar", "cross-key", "quoted"],
)
def test_replace_validates(tmp_path: Path, changes: dict, expected: str) -> None:
    """replace() raises ConfigError with the same messages as loading."""
    config = config_from_dict(None, base_dir=tmp_path, environ={})
    with pytest.raises(ConfigError) as info:
        config.replace(**changes)

    assert expected in str(info.value)


def test_replace_skips_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """replace() keeps an explicit database even when PERSISTENTQ_DATABASE is set."""
    monkeypatch.setenv("PERSISTENTQ_DATABASE", "env.sqlite3")
    config = config_from_dict(None, base_dir=tmp_path)
    changed = config.replace(**{"general.database": "explicit.sqlite3"})

    assert config.general.database == "env.sqlite3"
    assert changed.general.database == "explicit.sqlite3"


# Web token and secrets


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_web_token_optional_on_loopback(tmp_path: Path, host: str) -> None:
    """A loopback host needs no token."""
    config = config_from_dict({"web": {"host": host}}, base_dir=tmp_path, environ={})

    require_web_token(config)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_web_token_required_elsewhere(tmp_path: Path, host: str) -> None:
    """A host that is not loopback needs a token, and passes with one."""
    config = config_from_dict({"web": {"host": host}}, base_dir=tmp_path, environ={})
    with pytest.raises(ConfigError) as info:
        require_web_token(config)

    assert "web.token" in str(info.value)
    assert repr(host) in str(info.value)
    require_web_token(config.replace(**{"web.token": "s3cret"}))


def test_repr_hides_secrets(tmp_path: Path) -> None:
    """repr(config) shows neither the web token nor the database password."""
    environ = {"PERSISTENTQ_DATABASE": "postgresql://user:pa55word@db/jobs", "PERSISTENTQ_WEB_TOKEN": "t0ken"}
    config = config_from_dict(None, base_dir=tmp_path, environ=environ)

    assert "pa55word" not in repr(config)
    assert "t0ken" not in repr(config)
    assert "postgresql://user:***@db/jobs" in repr(config)


def test_exponent_number_without_dot(tmp_path: Path) -> None:
    """A number written 1e3 is read as a number, as YAML 1.2 reads it, not as a quoted string."""
    path = tmp_path / DEFAULT_CONFIG_NAME
    path.write_text("consumer:\n    n_time: 1e3\n", encoding="utf-8")

    assert load_config(path, environ={}).consumer.n_time == 1000.0
