"""Settings: defaults, the YAML file, the environment over the file, and the README's table."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from edgetwin.config import Settings, load_settings
from edgetwin.errors import ConfigError

README = Path(__file__).parents[2] / "README.md"


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        nested = [
            a
            for a in typing.get_args(field.annotation) or (field.annotation,)
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested:
            yield from _keys(nested[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [key for key in _keys(Settings) if f"| `{key}` |" not in text]
    assert missing == []


def test_defaults_run_a_standalone_node() -> None:
    settings = load_settings()
    assert settings.broker.embedded
    assert (settings.broker.host, settings.broker.port) == ("127.0.0.1", 1883)
    assert settings.database_path == Path("edgetwin.db")


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "edgetwin.yaml"
    config.write_text("broker:\n  port: 1900\n  host: 10.0.0.1\nstore:\n  synchronous: NORMAL\n")
    monkeypatch.setenv("EDGETWIN_BROKER__PORT", "1901")
    settings = load_settings(config)
    assert (settings.broker.host, settings.broker.port) == ("10.0.0.1", 1901)
    assert settings.store.synchronous == "NORMAL"
    assert load_settings(config, broker={"port": 1902}).broker.port == 1902


def test_password_is_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "edgetwin.yaml"
    config.write_text("broker:\n  embedded: false\n  username: node\n  password: s3cr3t-value\n")
    settings = load_settings(config)
    assert settings.broker.password is not None
    assert settings.broker.password.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("broker:\n  port: 99999\n", "broker.port"),
        ("brokr:\n  port: 1\n", "brokr"),
        ("- a list\n", "must hold a mapping"),
        ("store: {synchronous: OFF}\n", "store.synchronous"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "edgetwin.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_settings(config)


def test_environment_mistakes_are_named() -> None:
    with pytest.raises(ConfigError, match="brokr"):
        load_settings(environ={"EDGETWIN_BROKR__PORT": "1"})
    with pytest.raises(ConfigError, match="EDGETWIN_MANIFESTS__X sets a key inside a value"):
        load_settings(environ={"EDGETWIN_MANIFESTS": "/m", "EDGETWIN_MANIFESTS__X": "1"})
    assert load_settings(environ={"EDGETWIN_BROKER__EMBEDDED": "false"}).broker.embedded is False
